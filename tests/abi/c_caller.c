/* A C99 program's view of kiln.h: compiled as C (not C++) with -pedantic, so the header stays
 * valid C. Each function returns 0 on success or a line number on failure. */
#include <stddef.h>
#include <string.h>

#include "kiln.h"

#define CHECK(cond) \
  do {              \
    if (!(cond)) return __LINE__; \
  } while (0)

int c_caller_struct_sizes(void) {
  kiln_runtime_options o;
  CHECK(kiln_runtime_options_default(&o, sizeof o) == KILN_OK);
  CHECK(o.struct_size == sizeof o);
  CHECK(o.backend == KILN_BACKEND_AUTO);
  /* A caller built against a newer header (bigger struct) is refused... */
  CHECK(kiln_runtime_options_default(&o, sizeof o + 8) == KILN_ERR_VERSION_MISMATCH);
  /* ...and so is a smaller size no revision had (sizeof o - 8 is revision 1's, before
   * tensor_parallel, and accepted): the library never reads past the caller's struct. */
  CHECK(kiln_runtime_options_default(&o, sizeof o - 4) == KILN_ERR_VERSION_MISMATCH);
  CHECK(strstr(kiln_last_error(), "struct_size") != NULL);
  kiln_runtime *rt = NULL;
  o.struct_size = sizeof o + 16;
  CHECK(kiln_runtime_create(&o, &rt) == KILN_ERR_VERSION_MISMATCH);
  CHECK(rt == NULL);
  o.struct_size = sizeof o - 4;
  CHECK(kiln_runtime_create(&o, &rt) == KILN_ERR_VERSION_MISMATCH);
  o.struct_size = sizeof o;
  o.backend = KILN_BACKEND_CPU;
  CHECK(kiln_runtime_create(&o, &rt) == KILN_OK);
  kiln_runtime_info info;
  info.struct_size = sizeof info;
  CHECK(kiln_runtime_get_info(rt, &info) == KILN_OK);
  CHECK(info.backend == KILN_BACKEND_CPU);
  CHECK(info.n_threads > 0);
  kiln_runtime_free(rt);
  return 0;
}

static int count_tokens(const char *text, size_t len, int32_t id, void *user_data) {
  (void)text;
  (void)len;
  if (id >= 0) ++*(int *)user_data;
  return 0;
}

int c_caller_generate(const char *model_dir) {
  kiln_runtime *rt = NULL;
  kiln_model *model = NULL;
  kiln_session *session = NULL;
  int tokens = 0, rc = 0;
  kiln_generate_options g;
  kiln_generate_result result;
  if (kiln_runtime_create(NULL, &rt) != KILN_OK) return __LINE__;
  if (kiln_model_load(rt, model_dir, NULL, &model) != KILN_OK) { rc = __LINE__; goto done; }
  if (kiln_session_create(model, NULL, &session) != KILN_OK) { rc = __LINE__; goto done; }
  kiln_generate_options_default(&g, sizeof g);
  g.max_tokens = 5;
  g.ignore_eos = 1;
  g.token_fn = count_tokens;
  g.token_user_data = &tokens;
  memset(&result, 0, sizeof result);
  result.struct_size = sizeof result;
  if (kiln_generate(session, "Hello", 5, &g, &result) != KILN_OK) { rc = __LINE__; goto done; }
  if (result.n_generated != 5 || tokens != 5) rc = __LINE__;
done:
  kiln_session_free(session);
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return rc;
}
