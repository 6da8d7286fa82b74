// Scratch memory for the threads of an OpenMP parallel region, allocated before the region starts.
// An exception thrown inside a region cannot leave it (the process terminates), so code inside a
// region must not allocate: a std::bad_alloc here is thrown on the calling thread instead, where
// the C shim turns it into KILN_ERR_OUT_OF_MEMORY.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <memory>

namespace kiln::cpu {

class TeamScratch {
 public:
  // Room for `per_thread` floats for each of up to `n_threads` threads.
  TeamScratch(int n_threads, size_t per_thread)
      : per_thread_(per_thread),
        data_(std::make_unique_for_overwrite<float[]>(static_cast<size_t>(std::max(1, n_threads)) *
                                                      std::max<size_t>(1, per_thread))) {}

  // The calling thread's part; call it inside a region of at most n_threads threads.
  float* mine() const {
    return data_.get() + static_cast<size_t>(omp_get_thread_num()) * per_thread_;
  }

 private:
  size_t per_thread_;
  std::unique_ptr<float[]> data_;
};

}  // namespace kiln::cpu
