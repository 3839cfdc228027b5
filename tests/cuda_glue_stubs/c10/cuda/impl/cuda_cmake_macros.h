// Test-only stand-in for the header a CUDA build of torch generates (the CPU
// wheel lacks it): lets tests/test_build.py syntax-check csrc/cuda/*.cpp against
// torch's real c10/cuda headers on a machine without a CUDA torch.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
