// report-check.js - what harness/tests/report.sh asks the browser about results/index.html. The
// test inserts this into a copy of the page (the page itself has no script) and reads the facts
// it writes into a <pre> (id report-check) from chromium --dump-dom. One fact per line:
//   sections N                    every <section class="lab">
//   lab SLUG svg N svg_empty N img N img_broken N notyet 0|1
//   images N missing N            every inline <svg> and <img> on the page; missing: an SVG
//                                 with no rendered box (getBBox) or an <img> not decoded
//   duplicate_ids N               ids used twice (two inlined plots defining the same id)
//   resources N                   fetches the page started (Resource Timing: blocked ones too)
//   violations N ...              Content-Security-Policy violations: a request that tried to leave
"use strict";
(function () {
  const violations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    violations.push(e.violatedDirective + "=" + e.blockedURI);
  });
  function svgRendered(svg) {
    const r = svg.getBoundingClientRect();
    let bb = { width: 0, height: 0 };
    try { bb = svg.getBBox(); } catch (e) { /* not rendered */ }
    return r.width > 0 && r.height > 0 && bb.width > 0 && bb.height > 0;
  }
  function imgDecoded(img) { return img.complete && img.naturalWidth > 0 && img.naturalHeight > 0; }
  window.addEventListener("load", () => {
    // violations are reported in tasks of their own: look a little later (virtual time: no wait)
    setTimeout(() => {
      const out = [];
      const sections = document.querySelectorAll("section.lab");
      out.push("sections " + sections.length);
      for (const s of sections) {
        const svgs = [...s.querySelectorAll("svg")].filter((v) => !v.parentElement.closest("svg"));
        const imgs = [...s.querySelectorAll("img")];
        out.push("lab " + s.dataset.lab + " svg " + svgs.length +
                 " svg_empty " + svgs.filter((v) => !svgRendered(v)).length +
                 " img " + imgs.length + " img_broken " + imgs.filter((i) => !imgDecoded(i)).length +
                 " notyet " + (s.querySelector(".notyet") ? 1 : 0));
      }
      const svgs = [...document.querySelectorAll("svg")].filter((v) => !v.parentElement.closest("svg"));
      const imgs = [...document.images];
      const missing = svgs.filter((v) => !svgRendered(v)).length + imgs.filter((i) => !imgDecoded(i)).length;
      out.push("images " + (svgs.length + imgs.length) + " missing " + missing);
      const seen = new Set();
      let dup = 0;
      for (const e of document.querySelectorAll("[id]")) { if (seen.has(e.id)) dup++; seen.add(e.id); }
      out.push("duplicate_ids " + dup);
      out.push("resources " + performance.getEntriesByType("resource").length);
      out.push("violations " + violations.length + " " + violations.join(" ").replace(/[^\w:\/.=-]/g, "_"));
      const pre = document.createElement("pre");
      pre.id = "report-check";
      pre.textContent = out.join("\n");
      document.body.appendChild(pre);
    }, 500);
  });
})();
