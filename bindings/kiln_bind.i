/*
 * kiln_bind.i — helpers shared by the Go and C# sections of kiln.i (Python has its own, kiln.i's
 * SWIGPYTHON section). They cover what neither language can express through a struct proxy:
 *   - kiln_batch holds four array pointers that must stay valid only for one call: kiln_train_step
 *     and kiln_eval_loss are wrapped as functions that take the arrays as arguments (typemapped per
 *     language: Go slices, C# pinned addresses) and build the batch on the C stack. They keep
 *     kiln.h's names: the generated kiln_train_step is this one;
 *   - the training structs' fixed-size arrays (mtp_loss_weights, mtp_losses) one entry at a time;
 *   - kiln_trainer_options.param_groups as a C array the options own until freed.
 */

%ignore kiln_train_step;
%ignore kiln_eval_loss;
%rename(kiln_train_step) kiln_bind_train_step;
%rename(kiln_eval_loss) kiln_bind_eval_loss;
%immutable kiln_trainer_options::param_groups;
%immutable kiln_trainer_options::mtp_loss_weights;
%immutable kiln_train_result::mtp_losses;

%inline %{
kiln_status kiln_bind_train_step(kiln_trainer *trainer, int32_t batch_size, int32_t seq_len,
                                 const int32_t *inputs, const int32_t *targets,
                                 const uint8_t *loss_mask, const float *loss_weights,
                                 kiln_train_result *result) {
  kiln_batch batch = {sizeof(kiln_batch), batch_size, seq_len, inputs, targets, loss_mask, loss_weights};
  return kiln_train_step(trainer, &batch, result);
}
kiln_status kiln_bind_eval_loss(kiln_trainer *trainer, int32_t batch_size, int32_t seq_len,
                                const int32_t *inputs, const int32_t *targets,
                                const uint8_t *loss_mask, const float *loss_weights,
                                kiln_train_result *result) {
  kiln_batch batch = {sizeof(kiln_batch), batch_size, seq_len, inputs, targets, loss_mask, loss_weights};
  return kiln_eval_loss(trainer, &batch, result);
}

/* Parameter groups: a C array the options own until kiln_bind_trainer_options_free_param_groups
 * (kiln copies it in kiln_trainer_create). role is a kiln_param_role; a negative number is "not set". */
void kiln_bind_trainer_options_add_param_group(kiln_trainer_options *options, int role,
                                               float learning_rate, float weight_decay) {
  kiln_param_group *groups = (kiln_param_group *)realloc((void *)options->param_groups,
                                                         (options->n_param_groups + 1) * sizeof *groups);
  groups[options->n_param_groups].role = (kiln_param_role)role;
  groups[options->n_param_groups].learning_rate = learning_rate;
  groups[options->n_param_groups].weight_decay = weight_decay;
  options->param_groups = groups;
  options->n_param_groups += 1;
}
void kiln_bind_trainer_options_free_param_groups(kiln_trainer_options *options) {
  free((void *)options->param_groups);
  options->param_groups = NULL;
  options->n_param_groups = 0;
}

/* The fixed-size arrays of the training structs, one entry at a time (0 <= k < KILN_MAX_MTP_HEADS;
 * outside that range the getters return 0 and the setter does nothing). */
float kiln_bind_trainer_options_mtp_loss_weight(const kiln_trainer_options *options, int k) {
  return k >= 0 && k < KILN_MAX_MTP_HEADS ? options->mtp_loss_weights[k] : 0.0f;
}
void kiln_bind_trainer_options_set_mtp_loss_weight(kiln_trainer_options *options, int k, float weight) {
  if (k >= 0 && k < KILN_MAX_MTP_HEADS) options->mtp_loss_weights[k] = weight;
}
double kiln_bind_train_result_mtp_loss(const kiln_train_result *result, int k) {
  return k >= 0 && k < KILN_MAX_MTP_HEADS ? result->mtp_losses[k] : 0.0;
}
%}
