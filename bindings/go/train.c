// C helpers of train.go. Batches are built here, on the C stack, from pointers Go passes as plain
// arguments: cgo forbids Go from storing Go pointers in a struct that C reads, and copying the
// arrays into C memory would cost a copy per step. user_data of the progress callback is a
// cgo.Handle (an integer), as in callbacks.c.
#include "_cgo_export.h"

int kiln_go_progress_trampoline(float fraction, const char* stage, void* user_data);

void kiln_go_trainer_options_set_progress(kiln_trainer_options* options, uintptr_t handle) {
  options->progress_fn = handle ? kiln_go_progress_trampoline : NULL;
  options->progress_user_data = (void*)handle;
}

kiln_status kiln_go_trainer_set_progress(kiln_trainer* trainer, uintptr_t handle) {
  return kiln_trainer_set_progress(trainer, handle ? kiln_go_progress_trampoline : NULL,
                                   (void*)handle);
}

kiln_status kiln_go_train(kiln_trainer* trainer, int evaluate, int32_t batch_size, int32_t seq_len,
                          const int32_t* inputs, const int32_t* targets, const uint8_t* loss_mask,
                          const float* loss_weights, kiln_train_result* result) {
  kiln_batch batch = {sizeof(kiln_batch), batch_size,  seq_len, inputs, targets,
                      loss_mask,          loss_weights};
  return evaluate ? kiln_eval_loss(trainer, &batch, result)
                  : kiln_train_step(trainer, &batch, result);
}
