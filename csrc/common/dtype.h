// Element types the CUDA launchers accept, named without torch (the .cu files
// never include torch headers).
#pragma once

namespace deblurfast {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

}  // namespace deblurfast
