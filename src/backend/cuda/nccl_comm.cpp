#include "backend/cuda/nccl_comm.hpp"

#include <dlfcn.h>

#include <cstring>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define KILN_HAVE_NCCL_HEADER 1
#endif

namespace kiln::cuda {

#ifdef KILN_HAVE_NCCL_HEADER

static_assert(sizeof(ncclUniqueId) == kNcclIdBytes, "NCCL's unique id is 128 bytes");

// The NCCL entry points kiln uses, resolved from the loaded library.
struct NcclComm::Library {
  void* handle = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommInitAll) comm_init_all = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclReduceScatter) reduce_scatter = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;

  Library() {
    // The soname first (what an installed NCCL provides), then the development name.
    // RTLD_NODELETE: ncclGetUniqueId starts NCCL's bootstrap thread, which keeps running inside
    // the library after the call returns; the library must stay mapped after the last dlclose.
    for (const char* name : {"libnccl.so.2", "libnccl.so"}) {
      handle = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
      if (handle != nullptr) break;
    }
    if (handle == nullptr) {
      const char* why = dlerror();
      fail(KILN_ERR_UNSUPPORTED,
           std::string("data-parallel training and tensor parallelism need NCCL, and "
                       "libnccl.so.2 could not be loaded (") +
               (why ? why : "not found") +
               "): install NCCL or add its directory to LD_LIBRARY_PATH");
    }
    resolve(get_unique_id, "ncclGetUniqueId");
    resolve(comm_init_rank, "ncclCommInitRank");
    resolve(comm_init_all, "ncclCommInitAll");
    resolve(comm_destroy, "ncclCommDestroy");
    resolve(all_reduce, "ncclAllReduce");
    resolve(reduce_scatter, "ncclReduceScatter");
    resolve(all_gather, "ncclAllGather");
    resolve(error_string, "ncclGetErrorString");
  }
  ~Library() {
    if (handle != nullptr) dlclose(handle);
  }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;

  template <typename Fn>
  void resolve(Fn& fn, const char* symbol) {
    fn = reinterpret_cast<Fn>(dlsym(handle, symbol));
    if (fn == nullptr) {
      dlclose(handle);
      handle = nullptr;
      fail(KILN_ERR_UNSUPPORTED,
           std::string("the loaded NCCL library has no ") + symbol + " (kiln needs NCCL 2.x)");
    }
  }

  void check(ncclResult_t r, const char* call) const {
    if (r != ncclSuccess) {
      fail(KILN_ERR_BACKEND, std::string(call) + " failed: " + error_string(r));
    }
  }
};

NcclId NcclComm::create_id() {
  const Library lib;
  ncclUniqueId raw;
  lib.check(lib.get_unique_id(&raw), "ncclGetUniqueId");
  NcclId id;
  std::memcpy(id.data(), &raw, kNcclIdBytes);
  return id;
}

NcclComm::NcclComm(const NcclId& id, int world_size, int rank)
    : lib_(std::make_unique<Library>()), world_size_(world_size), rank_(rank) {
  ncclUniqueId raw;
  std::memcpy(&raw, id.data(), kNcclIdBytes);
  ncclComm_t comm = nullptr;
  lib_->check(lib_->comm_init_rank(&comm, world_size, raw, rank), "ncclCommInitRank");
  comm_ = comm;
}

NcclComm::NcclComm(std::unique_ptr<Library> lib, void* comm, int world_size, int rank)
    : lib_(std::move(lib)), comm_(comm), world_size_(world_size), rank_(rank) {}

std::vector<std::unique_ptr<NcclComm>> NcclComm::create_local_group(
    const std::vector<int>& devices) {
  const int n = static_cast<int>(devices.size());
  // Each communicator holds its own reference to the library (dlopen counts them); all are taken
  // before any communicator exists, so nothing can fail between ncclCommInitAll and the wrappers.
  std::vector<std::unique_ptr<Library>> libs;
  for (int r = 0; r < n; ++r) libs.push_back(std::make_unique<Library>());
  std::vector<ncclComm_t> raw(devices.size(), nullptr);
  libs[0]->check(libs[0]->comm_init_all(raw.data(), n, devices.data()), "ncclCommInitAll");
  std::vector<std::unique_ptr<NcclComm>> comms;
  comms.reserve(devices.size());
  for (int r = 0; r < n; ++r) {
    comms.push_back(std::unique_ptr<NcclComm>(new NcclComm(std::move(libs[r]), raw[r], n, r)));
  }
  return comms;
}

NcclComm::~NcclComm() {
  if (comm_ != nullptr) lib_->comm_destroy(static_cast<ncclComm_t>(comm_));
}

void NcclComm::all_reduce_sum(float* data, size_t count, cudaStream_t stream) {
  lib_->check(lib_->all_reduce(data, data, count, ncclFloat32, ncclSum,
                               static_cast<ncclComm_t>(comm_), stream),
              "ncclAllReduce (float32 sum)");
}

void NcclComm::all_reduce_sum(double* data, size_t count, cudaStream_t stream) {
  lib_->check(lib_->all_reduce(data, data, count, ncclFloat64, ncclSum,
                               static_cast<ncclComm_t>(comm_), stream),
              "ncclAllReduce (float64 sum)");
}

// In-place forms, as NCCL documents them: the receive buffer of a reduce-scatter and the send
// buffer of an all-gather are this rank's shard of the full buffer.
void NcclComm::reduce_scatter_sum(float* data, size_t shard_count, cudaStream_t stream) {
  float* mine = data + static_cast<size_t>(rank_) * shard_count;
  lib_->check(lib_->reduce_scatter(data, mine, shard_count, ncclFloat32, ncclSum,
                                   static_cast<ncclComm_t>(comm_), stream),
              "ncclReduceScatter (float32 sum)");
}

void NcclComm::all_gather(float* data, size_t shard_count, cudaStream_t stream) {
  const float* mine = data + static_cast<size_t>(rank_) * shard_count;
  lib_->check(lib_->all_gather(mine, data, shard_count, ncclFloat32, static_cast<ncclComm_t>(comm_),
                               stream),
              "ncclAllGather (float32)");
}

#else  // built without nccl.h

struct NcclComm::Library {};

namespace {
[[noreturn]] void no_nccl() {
  fail(KILN_ERR_UNSUPPORTED,
       "this kiln was built without NCCL's header (nccl.h), so it cannot train data-parallel or "
       "split a model across GPUs (tensor parallelism)");
}
}  // namespace

NcclId NcclComm::create_id() { no_nccl(); }
NcclComm::NcclComm(const NcclId&, int world_size, int rank) : world_size_(world_size), rank_(rank) {
  no_nccl();
}
NcclComm::NcclComm(std::unique_ptr<Library> lib, void* comm, int world_size, int rank)
    : lib_(std::move(lib)), comm_(comm), world_size_(world_size), rank_(rank) {}
std::vector<std::unique_ptr<NcclComm>> NcclComm::create_local_group(const std::vector<int>&) {
  no_nccl();
}
NcclComm::~NcclComm() = default;
void NcclComm::all_reduce_sum(float*, size_t, cudaStream_t) { no_nccl(); }
void NcclComm::all_reduce_sum(double*, size_t, cudaStream_t) { no_nccl(); }
void NcclComm::reduce_scatter_sum(float*, size_t, cudaStream_t) { no_nccl(); }
void NcclComm::all_gather(float*, size_t, cudaStream_t) { no_nccl(); }

#endif

}  // namespace kiln::cuda
