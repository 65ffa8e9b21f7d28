/* loadgen.c - an open-loop HTTP/1.1 load generator (docs/loadgen.md): the command line over
 * loadgen's engine (harness/bench/lg.h), which the bench engine runs in-process.
 *
 *   build/bin/loadgen http://127.0.0.1:8080/work --rate 2000 -c 50 -d 5
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lg.h"

typedef struct lg_cli {
  lg_opts_t o;
  int json, csv_header;
  const char *label, *stats_out_path;
  FILE *stats_out;
  char **keys;          /* the columns of --stats-out: the first sample's keys */
  size_t nkeys;
} lg_cli_t;

static const char usage_text[] =
    "usage: loadgen URL [options]\n"
    "  Open-loop HTTP/1.1 load: request i is due at t0 + i/rate, latency counts from that time.\n"
    "  -r, --rate N             offered requests/s (default 100); 0 = closed loop, as fast as\n"
    "                           the connections allow (peak throughput)\n"
    "  -c, --connections N      keep-alive connections, one request at a time each (default 50)\n"
    "  -d, --duration S         seconds of measured load (default 5; decimals allowed)\n"
    "  -w, --warmup S           seconds of load before measuring (default 0)\n"
    "  -t, --timeout-ms N       a request unanswered N ms after its due time is a timeout\n"
    "                           (default 2000)\n"
    "  -m, --method M           request method (default GET)\n"
    "  -b, --body STR           request body (sent with Content-Length)\n"
    "  -H, --header \"K: V\"      extra request header (repeatable)\n"
    "      --format csv|json    summary format on stdout (default csv)\n"
    "      --csv-header         print the CSV header line before the summary\n"
    "      --label STR          first CSV column (e.g. the variant)\n"
    "      --stats-url URL      sample this flat JSON endpoint during the run\n"
    "      --stats-interval-ms N  sampling period (default 100)\n"
    "      --stats-out FILE     samples as CSV: t_s, then one column per JSON key\n"
    "      --timeline FILE      CSV per interval:\n"
    "                           t_s,sent,responses,ok,errors,p50_ms,p99_ms,max_ms\n"
    "      --timeline-interval-ms N  (default 250)\n"
    "      --max-requests N     stop after N requests are sent\n"
    "  -q, --quiet              no progress line on stderr\n"
    "  -h, --help               this text\n"
    "Summary columns: label,offered_rps,achieved_rps,ok_rps,sent,responses,ok,err_connect,\n"
    "  err_timeout,err_http,err_other,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,duration_s\n"
    "Exit status: 0 after a run (even with errors), 2 on usage errors, 1 if it cannot run.\n";

static const char csv_columns[] =
    "label,offered_rps,achieved_rps,ok_rps,sent,responses,ok,err_connect,err_timeout,err_http,"
    "err_other,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,duration_s";
static int lg_usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "loadgen: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", usage_text);
  return 2;
}

static int lg_num(const char *s, double min, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !isfinite(v) || v < min || v > max) return -1;
  *out = v;
  return 0;
}

static int lg_int(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end || errno || v < min || v > max) return -1;
  *out = v;
  return 0;
}

enum {
  OPT_FORMAT = 256, OPT_CSV_HEADER, OPT_LABEL, OPT_STATS_URL, OPT_STATS_INTERVAL, OPT_STATS_OUT,
  OPT_TIMELINE, OPT_TIMELINE_INTERVAL, OPT_MAX_REQUESTS
};

/* Returns 0, or 2 after printing a usage error; -1 for --help. */
static int lg_parse_args(int argc, char **argv, lg_cli_t *cli) {
  lg_opts_t *o = &cli->o;
  static const struct option longopts[] = {
      {"rate", required_argument, NULL, 'r'},
      {"connections", required_argument, NULL, 'c'},
      {"duration", required_argument, NULL, 'd'},
      {"warmup", required_argument, NULL, 'w'},
      {"timeout-ms", required_argument, NULL, 't'},
      {"method", required_argument, NULL, 'm'},
      {"body", required_argument, NULL, 'b'},
      {"header", required_argument, NULL, 'H'},
      {"format", required_argument, NULL, OPT_FORMAT},
      {"csv-header", no_argument, NULL, OPT_CSV_HEADER},
      {"label", required_argument, NULL, OPT_LABEL},
      {"stats-url", required_argument, NULL, OPT_STATS_URL},
      {"stats-interval-ms", required_argument, NULL, OPT_STATS_INTERVAL},
      {"stats-out", required_argument, NULL, OPT_STATS_OUT},
      {"timeline", required_argument, NULL, OPT_TIMELINE},
      {"timeline-interval-ms", required_argument, NULL, OPT_TIMELINE_INTERVAL},
      {"max-requests", required_argument, NULL, OPT_MAX_REQUESTS},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  long l;
  int ch;
  opterr = 0; /* we print our own message, then the usage */
  while ((ch = getopt_long(argc, argv, ":r:c:d:w:t:m:b:H:qh", longopts, NULL)) != -1) {
    switch (ch) {
    case 'r':
      if (lg_num(optarg, 0, 10e6, &o->rate)) return lg_usage_error("bad --rate '%s'", optarg);
      break;
    case 'c':
      if (lg_int(optarg, 1, LG_MAX_CONNS, &o->conns))
        return lg_usage_error("bad --connections '%s' (1..20000)", optarg);
      break;
    case 'd':
      if (lg_num(optarg, 0.001, 86400, &o->duration_s))
        return lg_usage_error("bad --duration '%s' (seconds > 0)", optarg);
      break;
    case 'w':
      if (lg_num(optarg, 0, 86400, &o->warmup_s))
        return lg_usage_error("bad --warmup '%s'", optarg);
      break;
    case 't':
      if (lg_int(optarg, 1, 3600000, &o->timeout_ms))
        return lg_usage_error("bad --timeout-ms '%s'", optarg);
      break;
    case 'm':
      for (const char *p = optarg; *p; p++)
        if (*p < 'A' || *p > 'Z') return lg_usage_error("bad --method '%s'", optarg);
      if (!*optarg) return lg_usage_error("bad --method '%s'", optarg);
      o->method = optarg;
      break;
    case 'b': o->body = optarg; break;
    case 'H':
      if (!strchr(optarg, ':') || strpbrk(optarg, "\r\n") || *optarg == ':')
        return lg_usage_error("bad --header '%s' (want \"Name: value\")", optarg);
      if (o->n_headers == LG_MAX_HEADERS) return lg_usage_error("too many headers at '%s'", optarg);
      o->headers[o->n_headers++] = optarg;
      break;
    case OPT_FORMAT:
      if (strcmp(optarg, "csv") == 0) cli->json = 0;
      else if (strcmp(optarg, "json") == 0) cli->json = 1;
      else return lg_usage_error("bad --format '%s' (csv or json)", optarg);
      break;
    case OPT_CSV_HEADER: cli->csv_header = 1; break;
    case OPT_LABEL: cli->label = optarg; break;
    case OPT_STATS_URL: o->stats_url = optarg; break;
    case OPT_STATS_INTERVAL:
      if (lg_int(optarg, 1, 3600000, &o->stats_interval_ms))
        return lg_usage_error("bad --stats-interval-ms '%s'", optarg);
      break;
    case OPT_STATS_OUT: cli->stats_out_path = optarg; break;
    case OPT_TIMELINE: o->timeline = optarg; break;
    case OPT_TIMELINE_INTERVAL:
      if (lg_int(optarg, 1, 3600000, &o->timeline_interval_ms))
        return lg_usage_error("bad --timeline-interval-ms '%s'", optarg);
      break;
    case OPT_MAX_REQUESTS:
      if (lg_int(optarg, 1, LONG_MAX, &l)) return lg_usage_error("bad --max-requests '%s'", optarg);
      o->max_requests = (uint64_t)l;
      break;
    case 'q': o->quiet = 1; break;
    case 'h': return -1;
    case ':': return lg_usage_error("option '%s' needs a value", argv[optind - 1]);
    default: return lg_usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind != argc - 1)
    return lg_usage_error("%s", optind >= argc ? "a URL is required" : "exactly one URL");
  o->url = argv[optind];
  if (cli->stats_out_path && !o->stats_url)
    return lg_usage_error("%s", "--stats-out needs --stats-url");
  return 0;
}

static void lg_print_label(FILE *f, const char *label, int json) {
  if (json) {
    fputc('"', f);
    for (const char *p = label; *p; p++) {
      if (*p == '"' || *p == '\\') fputc('\\', f);
      if ((unsigned char)*p < 0x20) fprintf(f, "\\u%04x", *p);
      else fputc(*p, f);
    }
    fputc('"', f);
  } else if (strpbrk(label, ",\"\n")) {
    fputc('"', f);
    for (const char *p = label; *p; p++) {
      if (*p == '"') fputc('"', f);
      fputc(*p, f);
    }
    fputc('"', f);
  } else {
    fputs(label, f);
  }
}

/* --stats-out: one CSV row per sample, t_s then the first sample's keys (its columns); a key
 * missing later, or a value that is not a number, is an empty cell. Called by the engine. */
static void lg_on_stats(void *ud, double t_s, const char *body, size_t len) {
  lg_cli_t *cli = ud;
  json_error_t err;
  json_t *obj = json_loadb(body, len, 0, &err);
  if (!json_is_object(obj) || !cli->stats_out) {
    json_decref(obj);
    return;
  }
  const char *key;
  json_t *v;
  if (!cli->keys) {
    cli->keys = calloc(json_object_size(obj) + 1, sizeof(char *));
    if (!cli->keys) {
      json_decref(obj);
      return;
    }
    fputs("t_s", cli->stats_out);
    json_object_foreach(obj, key, v) {
      cli->keys[cli->nkeys] = strdup(key);
      if (!cli->keys[cli->nkeys]) break;
      fprintf(cli->stats_out, ",%s", cli->keys[cli->nkeys++]);
    }
    fputc('\n', cli->stats_out);
    if (cli->nkeys == 0) {
      json_decref(obj);
      return;
    }
  }
  fprintf(cli->stats_out, "%.3f", t_s);
  for (size_t i = 0; i < cli->nkeys; i++) {
    v = json_object_get(obj, cli->keys[i]);
    if (json_is_number(v)) fprintf(cli->stats_out, ",%.10g", json_number_value(v));
    else fputc(',', cli->stats_out);
  }
  fputc('\n', cli->stats_out);
  json_decref(obj);
}

static void lg_summary(const lg_cli_t *cli, const lg_result_t *r) {
  double vals[LG_NCOLS];
  lg_result_values(r, vals);
  const char *label = cli->label ? cli->label : "";
  if (cli->json) {
    fputs("{\"label\":", stdout);
    lg_print_label(stdout, label, 1);
    for (int i = 0; i < LG_NCOLS; i++)
      printf(",\"%s\":%.*f", lg_col_names[i], lg_col_decimals[i], vals[i]);
    fputs("}\n", stdout);
  } else {
    if (cli->csv_header) printf("%s\n", csv_columns);
    lg_print_label(stdout, label, 0);
    for (int i = 0; i < LG_NCOLS; i++) printf(",%.*f", lg_col_decimals[i], vals[i]);
    fputc('\n', stdout);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  lg_cli_t cli;
  memset(&cli, 0, sizeof cli);
  lg_opts_init(&cli.o);
  cli.o.handle_signals = 1;
  int rc = lg_parse_args(argc, argv, &cli);
  if (rc != 0) {
    if (rc < 0) fputs(usage_text, stdout);
    return rc < 0 ? 0 : rc;
  }
  if (cli.stats_out_path) {
    cli.stats_out = fopen(cli.stats_out_path, "w");
    if (!cli.stats_out) {
      fprintf(stderr, "loadgen: fopen %s: %s\n", cli.stats_out_path, strerror(errno));
      return 1;
    }
    cli.o.on_stats = lg_on_stats;
    cli.o.ud = &cli;
  }
  lg_result_t r;
  rc = lg_run(&cli.o, &r);
  if (rc == 2) fputs(usage_text, stderr);
  if (rc == 0) lg_summary(&cli, &r);
  if (cli.stats_out && fclose(cli.stats_out) != 0) {
    fprintf(stderr, "loadgen: writing %s: %s\n", cli.stats_out_path, strerror(errno));
    if (rc == 0) rc = 1;
  }
  for (size_t i = 0; i < cli.nkeys; i++) free(cli.keys[i]);
  free(cli.keys);
  return rc;
}
