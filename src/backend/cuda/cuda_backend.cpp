// The CUDA Backend: picks the device, owns the capped device allocator that every model and
// session on it draws from, and builds CudaTransformers.
#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_transformer.hpp"
#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/nccl_comm.hpp"
#include "backend/cuda/tensor_parallel_executor.hpp"
#include "backend/cuda/train/cuda_engine.hpp"
#include "backend/cuda_structure.hpp"
#include "core/error.hpp"
#include "model/config.hpp"
#include "model/tensor_parallel_plan.hpp"
#include "model/transformer_weights.hpp"
#include "train/model_layout.hpp"

namespace kiln {

namespace {

// A model whose structure the CUDA inference path does not implement (GPT-2, NanoChat) still
// loads on a CUDA runtime so that it can be trained there (the training engine covers every
// family); sessions on it fail with the inference path's own message.
class TrainOnlyExecutor final : public ModelExecutor {
 public:
  TrainOnlyExecutor(std::string why, int64_t n_parameters)
      : why_(std::move(why)), n_parameters_(n_parameters) {}
  std::unique_ptr<SessionState> create_state(int32_t) const override {
    fail(KILN_ERR_UNSUPPORTED, why_ + " (the model can still be trained on this runtime)");
  }
  void forward(SessionState&, std::span<const int32_t>, int32_t, float*, bool,
               const std::atomic<bool>*) const override {
    fail(KILN_ERR_UNSUPPORTED, why_);
  }
  int64_t n_parameters() const override { return n_parameters_; }

 private:
  std::string why_;
  int64_t n_parameters_;
};

class CudaBackend final : public Backend {
 public:
  // `allocators`: one per tensor-parallel rank (rank 0's is the backend's own); one when off.
  CudaBackend(std::vector<std::shared_ptr<cuda::DeviceAllocator>> allocators,
              std::string device_name)
      : allocator_(allocators.at(0)),
        rank_allocators_(std::move(allocators)),
        device_name_(std::move(device_name)) {}

  kiln_backend kind() const override { return KILN_BACKEND_CUDA; }
  const std::string& device_name() const override { return device_name_; }
  // The host side of a forward pass is one thread enqueueing work.
  int n_threads() const override { return 1; }
  // GGUF block formats reach the executor as stored: the layer matrices stay quantised on the
  // device (formats the kernels take), everything else is converted to BF16 at upload.
  bool keeps_quantized_weights() const override { return true; }

  std::unique_ptr<ModelExecutor> load_model(const ModelConfig& config,
                                            std::shared_ptr<const WeightSet> weights,
                                            const ProgressFn& progress,
                                            kiln_precision precision) const override {
    try {
      require_cuda_structure(config);  // before resolving: name what is missing, not a tensor
    } catch (const Error& e) {
      if (e.status() != KILN_ERR_UNSUPPORTED) throw;
      ModelConfig plain = config;
      plain.n_mtp_heads = 0;
      return std::make_unique<TrainOnlyExecutor>(
          e.what(), kiln::train::make_param_layout(plain).n_parameters());
    }
    const TransformerWeights resolved = resolve_transformer_weights(config, *weights);
    if (rank_allocators_.size() > 1 || cuda::tensor_parallel_forced_by_environment()) {
      validate_tensor_parallel(config, static_cast<int32_t>(rank_allocators_.size()));
      if (precision == KILN_PRECISION_F32) {
        fail(KILN_ERR_UNSUPPORTED,
             "tensor parallelism runs the BF16 path only; load with the default precision");
      }
      return std::make_unique<cuda::TensorParallelExecutor>(
          config, resolved, rope_inverse_frequencies(config), rank_allocators_, progress);
    }
    // The weights are copied to the device; the executor keeps nothing of the WeightSet.
    return std::make_unique<cuda::CudaTransformer>(config, resolved,
                                                   rope_inverse_frequencies(config), allocator_,
                                                   progress, precision == KILN_PRECISION_F32);
  }

  // A model on a CUDA runtime trains on the GPU (docs/training-design.md, "CUDA").
  std::unique_ptr<train::TrainEngine> create_train_engine(
      const train::TrainState& state) const override {
    return cuda::train::make_cuda_engine(state, allocator_);
  }

  DataParallelId create_data_parallel_id() const override { return cuda::NcclComm::create_id(); }

 private:
  std::shared_ptr<cuda::DeviceAllocator> allocator_;
  std::vector<std::shared_ptr<cuda::DeviceAllocator>> rank_allocators_;
  std::string device_name_;
};

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return buf;
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_index, uint64_t memory_limit,
                                           int tensor_parallel, std::string* why_not) {
  auto refuse = [&](const std::string& why) -> std::unique_ptr<Backend> {
    if (why_not != nullptr) *why_not = why;
    return nullptr;
  };
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return refuse(std::string("no usable CUDA driver or device (cudaGetDeviceCount: ") +
                  cudaGetErrorString(status) + ")");
  }
  if (count == 0) return refuse("no CUDA device found");
  if (device_index < 0 || device_index >= count) {
    return refuse("device index " + std::to_string(device_index) +
                  " is out of range: " + std::to_string(count) + " CUDA device(s) present");
  }
  if (tensor_parallel > 1 && device_index + tensor_parallel > count) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "kiln_runtime_options.tensor_parallel " + std::to_string(tensor_parallel) +
             " needs CUDA devices " + std::to_string(device_index) + ".." +
             std::to_string(device_index + tensor_parallel - 1) + " but " + std::to_string(count) +
             " CUDA device(s) are present");
  }
  cudaDeviceProp prop{};
  status = cudaGetDeviceProperties(&prop, device_index);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return refuse(std::string("cudaGetDeviceProperties(") + std::to_string(device_index) +
                  ") failed: " + cudaGetErrorString(status));
  }
  if (prop.major < 8) {
    return refuse(std::string(prop.name) + " has compute capability " + std::to_string(prop.major) +
                  "." + std::to_string(prop.minor) +
                  "; the CUDA backend needs 8.0 or newer (BF16)");
  }
  std::string name = std::string("CUDA: ") + prop.name + " (device " +
                     std::to_string(device_index) + ", sm_" + std::to_string(prop.major) +
                     std::to_string(prop.minor) + ", " + gib(prop.totalGlobalMem);
  if (memory_limit != 0) name += ", capped at " + std::to_string(memory_limit) + " bytes";
  if (tensor_parallel > 1) {
    name += ", tensor parallel over devices " + std::to_string(device_index) + ".." +
            std::to_string(device_index + tensor_parallel - 1);
  }
  name += ")";
  std::vector<std::shared_ptr<cuda::DeviceAllocator>> allocators;
  allocators.push_back(cuda::DeviceAllocator::create(device_index, memory_limit, prop.name));
  for (int r = 1; r < tensor_parallel; ++r) {
    // Every rank's device under the same cap (the cap is per device).
    cudaDeviceProp rank_prop{};
    KILN_CUDA_CHECK(cudaGetDeviceProperties(&rank_prop, device_index + r));
    allocators.push_back(
        cuda::DeviceAllocator::create(device_index + r, memory_limit, rank_prop.name));
  }
  return std::make_unique<CudaBackend>(std::move(allocators), std::move(name));
}

// Without tensor parallelism (the tests' entry point).
std::unique_ptr<Backend> make_cuda_backend(int device_index, uint64_t memory_limit,
                                           std::string* why_not) {
  return make_cuda_backend(device_index, memory_limit, 1, why_not);
}

}  // namespace kiln
