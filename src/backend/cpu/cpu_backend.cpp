// The CPU Backend: resolves a model's weights against its config and builds a CpuTransformer.
#include <omp.h>

#include <fstream>
#include <string>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_transformer.hpp"
#include "core/error.hpp"
#include "model/config.hpp"
#include "model/transformer_weights.hpp"

namespace kiln {

namespace {

// "CPU: <model name> (<n> threads)"; the model name from /proc/cpuinfo where there is one.
std::string describe_cpu(int n_threads) {
  std::string model = "unknown processor";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      if (const auto colon = line.find(':'); colon != std::string::npos) {
        model = line.substr(line.find_first_not_of(" \t", colon + 1));
      }
      break;
    }
  }
  return "CPU: " + model + " (" + std::to_string(n_threads) + " threads)";
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads)
      : n_threads_(n_threads > 0 ? n_threads : omp_get_num_procs()),
        device_name_(describe_cpu(n_threads_)) {}

  kiln_backend kind() const override { return KILN_BACKEND_CPU; }
  const std::string& device_name() const override { return device_name_; }
  int n_threads() const override { return n_threads_; }
  // GGUF block formats stay quantised in the mapping (integer dot kernels, backend/cpu/quant_*).
  bool keeps_quantized_weights() const override { return true; }

  std::unique_ptr<ModelExecutor> load_model(const ModelConfig& config,
                                            std::shared_ptr<const WeightSet> weights,
                                            const ProgressFn& progress,
                                            kiln_precision precision) const override {
    // The CPU computes in float32 only: BF16 is a CUDA precision.
    if (precision == KILN_PRECISION_BF16) {
      fail(KILN_ERR_UNSUPPORTED,
           "precision KILN_PRECISION_BF16 is not available on the CPU backend, which computes in "
           "float32 (use KILN_PRECISION_DEFAULT or KILN_PRECISION_F32, or a CUDA runtime)");
    }
    const TransformerWeights resolved = resolve_transformer_weights(config, *weights);
    return std::make_unique<cpu::CpuTransformer>(config, resolved, rope_inverse_frequencies(config),
                                                 n_threads_, std::move(weights), progress);
  }

 private:
  int n_threads_;
  std::string device_name_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace kiln
