# grade.mk - the learner loop and the grader (included by the Makefile).
#
# Learner:    make check LAB=NN | hint LAB=NN | reset LAB=NN | progress | watch LAB=NN
# Instructor: make grade [LAB=NN] [SUBMISSION=DIR] [REPEAT=N] [GRADE_SAN=0] [GRADE_PERF=passed|always|0]
#             make grade-all SUBMISSIONS=DIR [LAB=NN] [JOBS=N] [SHARD=K/M]
#             make grade-merge OUT=DIR SHARDS="DIR1 DIR2 ..."   | make grade-seal
#             make handout | make autograder
# The scripts are in harness/scripts/; docs/learner.md and docs/instructor.md explain them.

GRADE_ARGS = $(if $(LAB),--lab "$(LAB)") $(if $(REPEAT),--repeat $(REPEAT)) $(if $(GRADE_SAN),--san $(GRADE_SAN))

check:
	@SAN=$(SAN) BUILD=$(BUILD) harness/scripts/check.sh $(LAB)

hint:
	@BUILD=$(BUILD) harness/scripts/hint.sh $(LAB)

reset:
	@BUILD=$(BUILD) harness/scripts/reset.sh $(LAB)

progress:
	@BUILD=$(BUILD) harness/scripts/progress.sh

watch:
	@BUILD=$(BUILD) harness/scripts/watch.sh $(LAB)

grade:
	@harness/scripts/grade.sh $(GRADE_ARGS) --build-root "$(BUILD)/grade" $(if $(SUBMISSION),--submission "$(SUBMISSION)") $(if $(OUT),--out "$(OUT)") $(if $(filter 1,$(STRICT)),--strict)

grade-all:
	@harness/scripts/grade-all.sh $(GRADE_ARGS) --build-root "$(BUILD)/grade" $(if $(SUBMISSIONS),--submissions "$(SUBMISSIONS)") $(if $(OUT),--out "$(OUT)") $(if $(JOBS),--jobs $(JOBS)) $(if $(SHARD),--shard "$(SHARD)")

# Joins the OUT folders of make grade-all SHARD=K/M runs into one OUT (grades.csv as one run).
grade-merge:
	@harness/scripts/grade-all.sh --merge $(if $(OUT),--out "$(OUT)") $(SHARDS)

handout:
	@harness/scripts/handout.sh

autograder:
	@harness/scripts/autograder.sh $(if $(LAB),--lab "$(LAB)") --build-root "$(BUILD)/grade"

# What every graded submission shares, built once into BUILD (grade.sh points BUILD at
# build/grade/_kit): the library, the tools the suites start, and each lab's test objects.
# GRADE_LABS (slugs; default: every lab) limits it to the labs being graded.
GRADE_LABS ?= $(LABS)
GRADE_HIDDEN := $(patsubst solutions/%/hidden.c,%,$(wildcard solutions/[0-9][0-9]-*/hidden.c))
# The performance rows (manifest `perf`): each lab's bench, the service's main (a submission's
# exercise.o is linked with it in the sandbox) and the scorer that reads the bench's summary.json.
GRADE_PERF_KIT := $(BUILD)/grader/perfscore \
  $(foreach l,$(filter $(GRADE_LABS),$(BENCH_LABS)),$(BUILD)/bin/bench$(call lab_num,$(l)) $(BUILD)/obj/labs/$(l)/glue-exercise.o)
GRADE_KIT := $(LIB) $(TOOL_BINS) $(TESTKIT_OBJ) $(BUILD)/grader/witness.o \
  $(foreach l,$(filter $(GRADE_LABS),$(LABS)),$(if $(wildcard labs/$(l)/test.c),$(BUILD)/obj/labs/$(l)/test.o $(BUILD)/obj/labs/$(l)/glue-exercise-test.o)) \
  $(foreach l,$(filter $(GRADE_LABS),$(GRADE_HIDDEN)),$(BUILD)/obj/solutions/$(l)/hidden.o) \
  $(GRADE_PERF_KIT)

.PHONY: grade-kit grade-flags grade-seal grade-merge
grade-kit: $(GRADE_KIT)

# The flags a submission is compiled and linked with, for grade.sh, which runs the compiler in
# its sandbox (where only the kit's public headers exist) instead of through this Makefile.
# Paths are relative to BUILD (kit objects) or left out (-I: the sandbox's own).
grade-flags:
	@printf 'CC=%s\n' '$(CC)'
	@printf 'CFLAGS=%s\n' '$(WARN) $(CFLAGS) $(SANFLAGS) $(PKG_CFLAGS)'
	@printf 'LDFLAGS=%s\n' '$(ALL_LDFLAGS)'
	@printf 'LIBS=%s\n' '$(CRIT_LIBS) $(LDLIBS)'
	@printf 'KITOBJ=%s\n' '$(patsubst $(BUILD)/%,%,$(TESTKIT_OBJ) $(LIB) $(BUILD)/grader/witness.o)'

# The instructor tree's seal: sha256 of every file grading depends on (make grade checks it
# before grading and refuses when it no longer matches).
grade-seal:
	@harness/scripts/grade.sh --seal-only

# The end-of-test witness linked into the grader's suites (harness/grader/witness.c).
$(BUILD)/grader/witness.o: harness/grader/witness.c | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CRIT_CFLAGS) -c $< -o $@

# Hidden tests: solutions/NN-slug/hidden.c is one more Criterion suite, linked with a variant
# exactly as test.c is: build/test/labNN-VARIANT-hidden. make handout leaves these files out.
define GRADE_HIDDEN_RULES
$(BUILD)/obj/solutions/$(1)/hidden.o: solutions/$(1)/hidden.c | deps
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_CFLAGS) $$(CRIT_CFLAGS) -Iharness/testkit -Ilabs/$(1) -c $$< -o $$@
$(foreach v,$(CORE_VARIANTS),
$(BUILD)/test/lab$(call lab_num,$(1))-$(v)-hidden: $(BUILD)/obj/solutions/$(1)/hidden.o $(BUILD)/obj/labs/$(1)/$(v).o $(BUILD)/obj/labs/$(1)/glue-$(v)-test.o $(TESTKIT_OBJ) $(LIB)
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_LDFLAGS) $$^ $$(CRIT_LIBS) $$(LDLIBS) -o $$@
)
endef
$(foreach l,$(GRADE_HIDDEN),$(eval $(call GRADE_HIDDEN_RULES,$(l))))

# Scores the performance rows from a bench's summary.json (harness/grader/perfscore.c).
$(BUILD)/grader/perfscore: harness/grader/perfscore.c | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $< $(PKG_LIBS) -lm -o $@

# Checks a results.json against Gradescope's documented fields with jansson (the grader's
# self-test uses it).
$(BUILD)/grader/gscheck: harness/grader/gscheck.c | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $< $(PKG_LIBS) -o $@
