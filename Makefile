# Loopholes: one entry point. `make help` lists the targets.
#
# Everything is found by wildcard, so adding a lab means adding labs/NN-slug/ (lab.h, pitfall.c,
# exercise.c, test.c, README.md), solutions/NN-slug/solution.c and a block in labs/manifest.
# Build output goes to $(BUILD); SAN=1 builds with AddressSanitizer + UBSan into build-san/.

SHELL := /bin/bash
.DEFAULT_GOAL := all

SAN ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD ?= build
SANFLAGS :=
OPT := -O2
endif

# Where exercise.c files come from (the grader points this at a submission's labs/ folder).
EXERCISE_DIR ?= labs

PKGS := libuv libcurl jansson
# A fresh machine: install the Debian packages before the flags below are asked of pkg-config.
ifeq ($(filter clean help deps,$(MAKECMDGOALS)),)
ifneq ($(shell harness/scripts/deps.sh --check >/dev/null 2>&1 && echo ok),ok)
$(info Loopholes: some packages are missing; installing them (make deps)...)
DEPS_RC := $(shell harness/scripts/deps.sh >&2; echo $$?)
ifneq ($(DEPS_RC),0)
$(error make deps failed: see the messages above)
endif
endif
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CRIT_CFLAGS := $(shell pkg-config --cflags criterion 2>/dev/null)
CRIT_LIBS := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

CC ?= cc
# Quiet by default: `make V=1` shows the full commands.
ifeq ($(V),1)
Q :=
else
Q := @
endif
CFLAGS ?= $(OPT) -g
WARN := -std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE -Wall -Wextra -Werror -pedantic
ALL_CFLAGS := $(WARN) $(CFLAGS) $(SANFLAGS) $(PKG_CFLAGS) -Iharness/lib -Iharness/bench -MMD -MP
LDLIBS := $(PKG_LIBS) -lhttp_parser -lpthread -lm
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)

LIB_SRC := $(filter-out harness/lib/labglue.c,$(wildcard harness/lib/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/lib/libloopholes.a
TESTKIT_SRC := $(wildcard harness/testkit/*.c)
TESTKIT_OBJ := $(TESTKIT_SRC:%.c=$(BUILD)/obj/%.o)
TOOLS := $(notdir $(basename $(wildcard harness/tools/*.c)))
TOOL_BINS := $(TOOLS:%=$(BUILD)/bin/%)
# The tools a lab suite starts (tk_spawn / tk_upstream_start); add one here when a suite needs it.
SUITE_TOOLS := $(BUILD)/bin/upstream
HTESTS := $(notdir $(basename $(wildcard harness/tests/*.c)))
HTEST_BINS := $(HTESTS:%=$(BUILD)/test/harness-%)

LABS := $(notdir $(wildcard labs/[0-9][0-9]-*))
CORE_VARIANTS := pitfall solution exercise
lab_num = $(firstword $(subst -, ,$(1)))
# Extra right variants: any solutions/NN-slug/<name>.c but solution.c (hidden.c is the grader's
# hidden suite); wrong answers: labs/NN-slug/wrong/<name>.c, built as variant wrong-<name>.
lab_extras = $(filter-out solution hidden pitfall exercise,$(notdir $(basename $(wildcard solutions/$(1)/*.c))))
lab_wrongs = $(notdir $(basename $(wildcard labs/$(1)/wrong/*.c)))
variant_src = $(if $(filter solution,$(2)),solutions/$(1)/solution.c,$(if $(filter exercise,$(2)),$(EXERCISE_DIR)/$(1)/exercise.c,$(if $(filter pitfall,$(2)),labs/$(1)/pitfall.c,$(if $(filter wrong-%,$(2)),labs/$(1)/wrong/$(2:wrong-%=%).c,solutions/$(1)/$(2).c))))

LAB_BINS :=
LAB_TESTS :=
LAB_WRONG_TESTS :=

# One service binary and one suite binary per lab and variant. $(3) = wrong: a wrong answer, whose
# suite binary make test builds (its service binary only on demand).
define LAB_VARIANT_RULES
$(if $(3),LAB_WRONG_TESTS,LAB_TESTS) += $(BUILD)/test/lab$(call lab_num,$(1))-$(2)
$(if $(3),,LAB_BINS += $(BUILD)/bin/lab$(call lab_num,$(1))-$(2))
$(BUILD)/obj/labs/$(1)/$(2).o: $(call variant_src,$(1),$(2)) | deps
	@mkdir -p $$(@D)
	@echo "  CC    $$<  ($(2))"
	$$(Q)$$(CC) $$(ALL_CFLAGS) -Ilabs/$(1) -c $$< -o $$@
$(BUILD)/obj/labs/$(1)/glue-$(2).o: harness/lib/labglue.c | deps
	@mkdir -p $$(@D)
	$$(Q)$$(CC) $$(ALL_CFLAGS) -Ilabs/$(1) -DLAB_SLUG='"$(1)"' -DLAB_VARIANT='"$(2)"' -c $$< -o $$@
$(BUILD)/obj/labs/$(1)/glue-$(2)-test.o: harness/lib/labglue.c | deps
	@mkdir -p $$(@D)
	$$(Q)$$(CC) $$(ALL_CFLAGS) -Ilabs/$(1) -DLAB_SLUG='"$(1)"' -DLAB_VARIANT='"$(2)"' -DLAB_NO_MAIN -c $$< -o $$@
$(BUILD)/bin/lab$(call lab_num,$(1))-$(2): $(BUILD)/obj/labs/$(1)/$(2).o $(BUILD)/obj/labs/$(1)/glue-$(2).o $(LIB)
	@mkdir -p $$(@D)
	@echo "  LD    $$@"
	$$(Q)$$(CC) $$(ALL_LDFLAGS) $$^ $$(LDLIBS) -o $$@
# Order-only on SUITE_TOOLS: whoever builds a suite (make check, grade, test, a SAN build after a
# plain one) gets the tools it starts in the same BUILD.
$(BUILD)/test/lab$(call lab_num,$(1))-$(2): $(BUILD)/obj/labs/$(1)/test.o $(BUILD)/obj/labs/$(1)/$(2).o $(BUILD)/obj/labs/$(1)/glue-$(2)-test.o $(TESTKIT_OBJ) $(LIB) | $$(SUITE_TOOLS)
	@mkdir -p $$(@D)
	@echo "  LD    $$@"
	$$(Q)$$(CC) $$(ALL_LDFLAGS) $$^ $$(CRIT_LIBS) $$(LDLIBS) -o $$@
endef

define LAB_RULES
$(BUILD)/obj/labs/$(1)/test.o: labs/$(1)/test.c | deps
	@mkdir -p $$(@D)
	@echo "  CC    $$<"
	$$(Q)$$(CC) $$(ALL_CFLAGS) $$(CRIT_CFLAGS) -Iharness/testkit -Ilabs/$(1) -c $$< -o $$@
$(foreach v,$(CORE_VARIANTS) $(call lab_extras,$(1)),$(eval $(call LAB_VARIANT_RULES,$(1),$(v))))
$(foreach w,$(call lab_wrongs,$(1)),$(eval $(call LAB_VARIANT_RULES,$(1),wrong-$(w),wrong)))
endef

$(foreach l,$(LABS),$(eval $(call LAB_RULES,$(l))))

# The bench engine (harness/bench/, docs/bench.md): libbench.a, linked by build/bin/loadgen and by
# each lab's bench: labs/NN-slug/bench.c becomes build/bin/benchNN.
BENCH_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard harness/bench/*.c))
BENCH_LIB := $(BUILD)/lib/libbench.a
BENCH_LABS := $(patsubst labs/%/bench.c,%,$(wildcard labs/[0-9][0-9]-*/bench.c))
BENCH_BINS := $(foreach l,$(BENCH_LABS),$(BUILD)/bin/bench$(call lab_num,$(l)))
define BENCH_RULES
$(BUILD)/obj/labs/$(1)/bench.o: labs/$(1)/bench.c | deps
	@mkdir -p $$(@D)
	@echo "  CC    $$<"
	$$(Q)$$(CC) $$(ALL_CFLAGS) -Ilabs/$(1) -DBENCH_SLUG='"$(1)"' -c $$< -o $$@
$(BUILD)/bin/bench$(call lab_num,$(1)): $(BUILD)/obj/labs/$(1)/bench.o $(BENCH_LIB) $(LIB)
	@mkdir -p $$(@D)
	@echo "  LD    $$@"
	$$(Q)$$(CC) $$(ALL_LDFLAGS) $$^ $$(LDLIBS) -o $$@
endef
$(foreach l,$(BENCH_LABS),$(eval $(call BENCH_RULES,$(l))))

.SECONDARY:
.PHONY: all deps test bench report check grade grade-all reset hint progress watch handout autograder clean help

all: $(LIB) $(TOOL_BINS) $(LAB_BINS) $(LAB_TESTS) $(HTEST_BINS) $(BENCH_BINS)
	@echo "built into $(BUILD)/. Next: make test   (or: make bench LAB=01)"

deps:
	@harness/scripts/deps.sh --quiet

$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(ALL_CFLAGS) $(CRIT_CFLAGS) -Iharness/testkit -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(@D)
	$(Q)$(AR) rcs $@ $^

$(BENCH_LIB): $(BENCH_OBJ)
	@mkdir -p $(@D)
	$(Q)$(AR) rcs $@ $^

# loadgen is a thin main over the bench engine's load generator (harness/bench/lg.c).
$(BUILD)/bin/loadgen: $(BUILD)/obj/harness/tools/loadgen.o $(BENCH_LIB) $(LIB)
	@mkdir -p $(@D)
	@echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bin/%: $(BUILD)/obj/harness/tools/%.o $(LIB)
	@mkdir -p $(@D)
	@echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/test/harness-%: $(BUILD)/obj/harness/tests/%.o $(TESTKIT_OBJ) $(BENCH_LIB) $(LIB)
	@mkdir -p $(@D)
	@echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) $^ $(CRIT_LIBS) $(LDLIBS) -o $@

# Runs every harness suite, then every lab's suite on its solution (must pass) and on its pitfall
# (must fail). Ends with "N passed, N failed".
# Then every extra right variant (must pass) and every wrong answer in labs/NN-slug/wrong/ (its
# named test must fail on it), and the kit's self-check (harness/scripts/selfcheck.sh).
test: all $(LAB_WRONG_TESTS)
	@BUILD=$(BUILD) harness/scripts/test.sh

# make bench [LAB=01] [VARIANTS="pitfall solution"] [QUICK=1] [REPLOT=1]: each lab's
# build/bin/benchNN (labs/NN-slug/bench.c on the bench engine, docs/bench.md).
bench: all
	@BUILD=$(BUILD) harness/scripts/bench.sh $(if $(QUICK),--quick) $(if $(REPLOT),--replot) $(if $(LAB),--lab $(LAB)) $(if $(VARIANTS),--variants "$(VARIANTS)")

# make report: results/index.html, the workshop page (harness/tools/report.c), from the summaries
# and plots already in results/ (make bench writes it after every run too).
report: $(BUILD)/bin/report
	@$(BUILD)/bin/report --results results --out results/index.html
	@echo "Next: open results/index.html (one file, works offline); make bench LAB=NN fills a lab in"

clean:
	rm -rf build build-san

# For editors (clangd and friends): every C file with the flags it is built with. No bear needed.
COMPDB_SRC := $(wildcard harness/lib/*.c harness/tools/*.c harness/tests/*.c harness/testkit/*.c \
  harness/grader/*.c labs/[0-9][0-9]-*/*.c labs/[0-9][0-9]-*/wrong/*.c solutions/[0-9][0-9]-*/*.c)
compile_commands.json: Makefile $(COMPDB_SRC) | deps
	@{ echo '['; sep=''; \
	  for f in $(COMPDB_SRC); do \
	    lab=$$(printf '%s\n' "$$f" | sed -n 's,^\(labs\|solutions\)/\([0-9][0-9]-[^/]*\)/.*,\2,p'); \
	    args="$(CC) $(ALL_CFLAGS) $(CRIT_CFLAGS) -Iharness/testkit$${lab:+ -Ilabs/$$lab} -c $$f"; \
	    printf '%s  {"directory": "%s", "file": "%s", "command": "%s"}' "$$sep" "$(CURDIR)" "$$f" "$${args//\"/\\\"}"; \
	    sep=$$',\n'; \
	  done; printf '\n]\n'; } > $@
	@echo "wrote $@ ($(words $(COMPDB_SRC)) files)"

help:
	@echo "make            build everything into build/ (installs Debian packages when missing)"
	@echo "make test       harness tests + every lab: suite passes on solution, fails on pitfall"
	@echo "make test SAN=1 the same under AddressSanitizer + UBSan"
	@echo "make bench [LAB=NN] [VARIANTS=\"pitfall solution exercise\"] [QUICK=1] [REPLOT=1]  load, CSV, plots, targets in results/"
	@echo "make report     results/index.html: the workshop page from the bench's results (make bench writes it too)"
	@echo "make deps       install the Debian packages the kit needs"
	@echo "make compile_commands.json   for clangd and other editors"
	@echo ""
	@echo "Learner (docs/learner.md):"
	@echo "make check LAB=NN     your labs/NN-*/exercise.c against the lab's suite, with the figures and a hint"
	@echo "make hint LAB=NN      one more hint each time"
	@echo "make watch LAB=NN     check again whenever exercise.c is saved"
	@echo "make reset LAB=NN     restore exercise.c (your file is kept in labs/NN-*/.backup/)"
	@echo "make progress         every lab: not started / failing k of n / done"
	@echo ""
	@echo "Instructor (docs/instructor.md):"
	@echo "make grade [LAB=NN] [SUBMISSION=DIR] [REPEAT=N]   scores, results.json, JUnit, TAP in results/grade/"
	@echo "make grade-all SUBMISSIONS=DIR [JOBS=N]          every submission in DIR into one grades.csv"
	@echo "make grade-all ... SHARD=K/M OUT=DIR; make grade-merge OUT=DIR SHARDS=\"DIR1 DIR2 ...\"   a course on M machines"
	@echo "make grade-seal       seal the kit: make grade then refuses an edited test, manifest or grader"
	@echo "make handout          dist/ tarballs for students and instructors"
	@echo "make autograder       a Gradescope autograder zip"

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Further targets (learner loop, grader, handout) live in harness/*.mk.
-include $(wildcard harness/*.mk)
