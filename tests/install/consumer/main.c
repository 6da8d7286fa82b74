/* Built against an installed kiln (pkg-config or find_package): loads a model and checks its
 * vocabulary size, printing the architecture. */
#include <stdio.h>

#include "kiln.h"

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  kiln_runtime *rt = NULL;
  kiln_model *model = NULL;
  int rc = 1;
  if (kiln_runtime_create(NULL, &rt) == KILN_OK &&
      kiln_model_load(rt, argv[1], NULL, &model) == KILN_OK) {
    kiln_model_info info;
    info.struct_size = sizeof info;
    if (kiln_model_get_info(model, &info) == KILN_OK && info.vocab_size > 0) {
      printf("loaded %s (vocab %d) through the installed kiln\n", info.architecture,
             info.vocab_size);
      rc = 0;
    }
  }
  if (rc) fprintf(stderr, "consumer: %s\n", kiln_last_error());
  kiln_model_free(model);
  kiln_runtime_free(rt);
  return rc;
}
