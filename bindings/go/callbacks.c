// C trampolines for kiln's callbacks: user_data carries a cgo.Handle (an integer) naming the Go
// state, and the trampoline calls the exported Go function with it.
#include "_cgo_export.h"

int kiln_go_token_trampoline(const char* text, size_t text_len, int32_t token_id, void* user_data) {
  return goKilnToken((char*)text, text_len, token_id, (uintptr_t)user_data);
}

int kiln_go_progress_trampoline(float fraction, const char* stage, void* user_data) {
  return goKilnProgress(fraction, (char*)stage, (uintptr_t)user_data);
}

void kiln_go_log_trampoline(kiln_log_level level, const char* message, void* user_data) {
  goKilnLog(level, (char*)message, (uintptr_t)user_data);
}

void kiln_go_set_token_callback(kiln_generate_options* options, uintptr_t handle) {
  options->token_fn = kiln_go_token_trampoline;
  options->token_user_data = (void*)handle;
}

void kiln_go_set_progress_callback(kiln_model_load_options* options, uintptr_t handle) {
  options->progress_fn = kiln_go_progress_trampoline;
  options->progress_user_data = (void*)handle;
}

void kiln_go_set_log_callback(kiln_runtime_options* options, uintptr_t handle) {
  options->log_fn = kiln_go_log_trampoline;
  options->log_user_data = (void*)handle;
}

kiln_status kiln_go_set_global_log_callback(uintptr_t handle, kiln_log_level min_level) {
  return kiln_set_log_callback(handle ? kiln_go_log_trampoline : NULL, (void*)handle, min_level);
}

void kiln_go_set_quantize_progress_callback(kiln_quantize_options* options, uintptr_t handle) {
  options->progress_fn = kiln_go_progress_trampoline;
  options->progress_user_data = (void*)handle;
}

void kiln_go_set_train_progress_callback(kiln_tokenizer_train_options* options, uintptr_t handle) {
  options->progress_fn = kiln_go_progress_trampoline;
  options->progress_user_data = (void*)handle;
}
