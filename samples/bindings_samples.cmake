# The language samples (issue 7): samples/python, go, rust and csharp each load a model and stream
# a 40-token completion of "In the beginning" with a fixed seed, like kiln-generate. ctest builds
# and runs each one whose binding is configured, with the binding's label (`ctest -L go`) plus
# `samples`. samples/fsharp is documentation only (Debian has no F# compiler).
#
# This directory is added before bindings/ and before enable_testing(), so the binding targets
# (kiln_python, kiln_csharp) and the toolchains it found (KILN_GO, KILN_CARGO, KILN_MCS,
# KILN_MONO) exist only once the top-level directory is done: the samples are registered then.
function(kiln_add_binding_samples)
  if(NOT KILN_BUILD_BINDINGS)
    return()
  endif()
  set(src ${PROJECT_SOURCE_DIR}/samples)
  set(out ${PROJECT_BINARY_DIR}/samples)
  set(check ${src}/check_sample_output.sh)
  set(libdir $<TARGET_FILE_DIR:kiln>)
  # The text on stdout must contain a word (the bundled model writes King James English), and the
  # speed line on stderr.
  set(text_regex "[A-Za-z]{2,}")
  set(speed_regex "^[0-9]+ tokens, [0-9.]+ tok/s")

  # C#: compiled with mcs against the binding's Kiln.dll as part of the build.
  if(TARGET kiln_csharp)
    set(cs_exe ${out}/csharp/Generate.exe)
    add_custom_command(OUTPUT ${cs_exe}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out}/csharp
      COMMAND ${KILN_MCS} -nologo -warnaserror -out:${cs_exe}
              -r:${PROJECT_BINARY_DIR}/bindings/csharp/Kiln.dll ${src}/csharp/Generate.cs
      DEPENDS ${src}/csharp/Generate.cs ${PROJECT_BINARY_DIR}/bindings/csharp/Kiln.dll
      COMMENT "mcs samples/csharp/Generate.exe")
    add_custom_target(kiln_sample_csharp ALL DEPENDS ${cs_exe})
    add_dependencies(kiln_sample_csharp kiln_csharp)
  endif()

  if(NOT KILN_BUILD_TESTS)
    return()
  endif()

  # Each language: <lang>_generate runs the sample from the repository root (so its default model
  # path, models/kjv-tiny, is exercised) and <lang>_help checks --help.
  function(kiln_add_sample_tests lang label help_stdout help_stderr)
    cmake_parse_arguments(PARSE_ARGV 4 arg "" "" "COMMAND;ENVIRONMENT;PROPERTIES")
    add_test(NAME sample_${lang}_generate
      COMMAND ${check} "${text_regex}" "${speed_regex}" ${arg_COMMAND}
      WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    add_test(NAME sample_${lang}_help
      COMMAND ${check} "${help_stdout}" "${help_stderr}" ${arg_COMMAND} --help
      WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(sample_${lang}_generate sample_${lang}_help PROPERTIES
      LABELS "${label};samples" TIMEOUT 300 ENVIRONMENT "${arg_ENVIRONMENT}" ${arg_PROPERTIES})
  endfunction()

  if(TARGET kiln_python)
    find_package(Python3 COMPONENTS Interpreter QUIET)
    kiln_add_sample_tests(python python "usage:" -
      COMMAND ${Python3_EXECUTABLE} ${src}/python/generate.py
      ENVIRONMENT "PYTHONPATH=${PROJECT_BINARY_DIR}/bindings/python")
  endif()

  if(TARGET kiln_csharp AND KILN_MONO)
    kiln_add_sample_tests(csharp csharp "usage:" -
      COMMAND ${KILN_MONO} --debug ${cs_exe}
      ENVIRONMENT "LD_LIBRARY_PATH=${PROJECT_BINARY_DIR}/bindings/csharp:${libdir}"
                  "MONO_PATH=${PROJECT_BINARY_DIR}/bindings/csharp")
  endif()

  # Go: `go vet` and `go build` (a fixture) in samples/go, offline, sharing the binding tests' Go
  # caches (hence their lock), then the binary runs from the repository root.
  # Like the binding's tests, through a copy of go.mod (-modfile) whose kiln.dev/kiln/raw is the
  # SWIG-generated package in the build directory.
  if(TARGET kiln_go_raw)
    file(READ ${src}/go/go.mod go_mod)
    string(REPLACE "=> ../../bindings/go/raw" "=> ${PROJECT_BINARY_DIR}/bindings/go/raw" go_mod "${go_mod}")
    string(REPLACE "=> ../../bindings/go" "=> ${PROJECT_SOURCE_DIR}/bindings/go" go_mod "${go_mod}")
    file(WRITE ${out}/go/gomod/go.mod "${go_mod}")
    set(go_env
      "GOPATH=${PROJECT_BINARY_DIR}/bindings/go/gopath"
      "GOCACHE=${PROJECT_BINARY_DIR}/bindings/go/gocache"
      "GOFLAGS=-mod=mod -modfile=${out}/go/gomod/go.mod"
      "GOPROXY=off"
      "CGO_CFLAGS=-I${PROJECT_SOURCE_DIR}/capi"
      "CGO_LDFLAGS=-L${libdir} -Wl,-rpath,${libdir}")
    file(MAKE_DIRECTORY ${out}/go)
    add_test(NAME sample_go_vet COMMAND ${KILN_GO} vet ./... WORKING_DIRECTORY ${src}/go)
    add_test(NAME sample_go_build COMMAND ${KILN_GO} build -o ${out}/go/generate ./generate
      WORKING_DIRECTORY ${src}/go)
    set_tests_properties(sample_go_vet sample_go_build PROPERTIES
      LABELS "go;samples" TIMEOUT 600 ENVIRONMENT "${go_env}" RESOURCE_LOCK kiln_go_cache)
    set_tests_properties(sample_go_build PROPERTIES FIXTURES_SETUP kiln_sample_go)
    kiln_add_sample_tests(go go - "usage:"
      COMMAND ${out}/go/generate
      PROPERTIES FIXTURES_REQUIRED kiln_sample_go)
  endif()

  # Rust: `cargo build --offline` of samples/rust/generate (a fixture) against the libkiln.so just
  # built. Only kiln's own crates get kiln-sys's rpath, so the binary finds the library through
  # LD_LIBRARY_PATH.
  if(KILN_CARGO)
    set(cargo_target ${out}/rust/target)
    add_test(NAME sample_rust_build
      COMMAND ${KILN_CARGO} build --offline --manifest-path ${src}/rust/generate/Cargo.toml)
    set_tests_properties(sample_rust_build PROPERTIES LABELS "rust;samples" TIMEOUT 900
      ENVIRONMENT "KILN_LIB_DIR=${libdir};CARGO_TARGET_DIR=${cargo_target}"
      FIXTURES_SETUP kiln_sample_rust)
    kiln_add_sample_tests(rust rust "usage:" -
      COMMAND ${cargo_target}/debug/generate
      ENVIRONMENT "LD_LIBRARY_PATH=${libdir}"
      PROPERTIES FIXTURES_REQUIRED kiln_sample_rust)
  endif()
endfunction()

cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL kiln_add_binding_samples)
