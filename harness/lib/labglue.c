/* labglue.c - describes one lab to the runtime. Compiled once per lab, with -Ilabs/NN-slug so
 * that "lab.h" is that lab's header, and -DLAB_SLUG / -DLAB_VARIANT from the Makefile. */
#include <stddef.h>
#include "lab.h"
#include "labrt.h"

#ifndef LAB_SLUG
#error "LAB_SLUG must be defined by the build"
#endif
#ifndef LAB_VARIANT
#define LAB_VARIANT "variant"
#endif

#define GLUE_OPT_INT LAB_OPT_INT
#define GLUE_OPT_STR LAB_OPT_STR
#define GLUE_OPT(type, name, flag, def, help) \
  {GLUE_OPT_##type, flag, help, offsetof(lab_config_t, name)},
#define GLUE_DEFAULT(type, name, flag, def, help) .name = def,

static const lab_opt_t glue_opts[] = {LAB_OPTIONS(GLUE_OPT){LAB_OPT_INT, NULL, NULL, 0}};
static const lab_config_t glue_defaults = {LAB_OPTIONS(GLUE_DEFAULT) .lab_config_end_ = 0};

static int glue_create(void **lab, shell_t *shell, const void *cfg) {
  return lab_create((lab_t **)lab, shell, (const lab_config_t *)cfg);
}

static void glue_destroy(void *lab) { lab_destroy((lab_t *)lab); }

const lab_def_t LAB_DEF = {
    .slug = LAB_SLUG,
    .variant = LAB_VARIANT,
    .opts = glue_opts,
    .n_opts = sizeof glue_opts / sizeof glue_opts[0] - 1,
    .config_size = sizeof(lab_config_t),
    .defaults = &glue_defaults,
    .create = glue_create,
    .destroy = glue_destroy,
};

#ifndef LAB_NO_MAIN
int main(int argc, char **argv) { return lab_main(&LAB_DEF, argc, argv); }
#endif
