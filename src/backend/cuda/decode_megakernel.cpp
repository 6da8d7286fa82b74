#include "backend/cuda/decode_megakernel.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {
// An on/off switch that is on unless set to "0".
bool switch_from_environment(const char* name) {
  const char* env = std::getenv(name);
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  fail(KILN_ERR_INVALID_ARGUMENT,
       std::string(name) + " is \"" + env + "\"; expected \"0\" or \"1\"");
}
}  // namespace

bool megakernel_from_environment() { return switch_from_environment("KILN_CUDA_MEGAKERNEL"); }

bool megakernel_prefetch_from_environment() {
  return switch_from_environment("KILN_CUDA_MEGAKERNEL_PREFETCH");
}

int32_t megakernel_blocks(int64_t hidden, int64_t intermediate, QkvShape shape) {
  if (!decode_megakernel_supported(hidden, intermediate, shape)) return 0;
  return megakernel_max_blocks(hidden, intermediate, shape);
}

DecodeMegakernel::DecodeMegakernel(const std::shared_ptr<DeviceAllocator>& allocator,
                                   const MegakernelArgs& dims,
                                   const std::vector<MegakernelLayer>& layers, cudaStream_t stream)
    : args_(dims) {
  const size_t table_bytes = layers.size() * sizeof(MegakernelLayer);
  layers_ = allocator->allocate(table_bytes, "the decode megakernel's layer table");
  partials_ = allocator->allocate(
      static_cast<size_t>(megakernel_partials_floats(dims.shape, dims.context_length)) *
          sizeof(float),
      "the decode megakernel's attention partial results for a context of " +
          std::to_string(dims.context_length) + " tokens");
  barrier_ = allocator->allocate(2 * sizeof(unsigned), "the decode megakernel's grid barrier");
  KILN_CUDA_CHECK(
      cudaMemcpyAsync(layers_.get(), layers.data(), table_bytes, cudaMemcpyHostToDevice, stream));
  KILN_CUDA_CHECK(cudaMemsetAsync(barrier_.get(), 0, barrier_.size(), stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));  // `layers` may go away after this returns
  args_.layers = layers_.as<MegakernelLayer>();
  args_.n_layers = static_cast<int32_t>(layers.size());
  args_.partials = partials_.as<float>();
  args_.barrier = barrier_.as<unsigned>();
}

void DecodeMegakernel::enqueue(float* x, float* qkv, bf16* act, const int32_t* position,
                               cudaStream_t stream) const {
  MegakernelArgs a = args_;
  a.x = x;
  a.qkv = qkv;
  a.act = act;
  a.position = position;
  decode_megakernel(a, stream);
}

}  // namespace kiln::cuda
