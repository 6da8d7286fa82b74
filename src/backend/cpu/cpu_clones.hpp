// KILN_CPU_CLONES: the hot CPU loops are compiled twice (AVX2 and baseline) and picked at load
// time through an ifunc. Under ThreadSanitizer the ifunc resolver is instrumented and runs during
// relocation, before the TSan runtime is initialised, and the process crashes at load: TSan
// builds use the baseline only.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define KILN_CPU_CLONES
#else
#define KILN_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#endif
