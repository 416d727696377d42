// Instruction-set names, run-time CPU checks and aligned buffers for the batch kernels.
#include <cstring>
#include <new>
#include <stdexcept>

#include "landmarks.h"

namespace facefill {

Isa parse_isa(const std::string& name) {
    if (name == "auto") return Isa::kAuto;
    if (name == "reference") return Isa::kReference;
    if (name == "sse2") return Isa::kSse2;
    if (name == "avx2") return Isa::kAvx2;
    if (name == "avx512") return Isa::kAvx512;
    throw std::invalid_argument("isa must be auto, reference, sse2, avx2 or avx512, got '" +
                                name + "'");
}

std::string isa_name(Isa isa) {
    switch (isa) {
        case Isa::kAuto: return "auto";
        case Isa::kReference: return "reference";
        case Isa::kSse2: return "sse2";
        case Isa::kAvx2: return "avx2";
        case Isa::kAvx512: return "avx512";
    }
    return "?";
}

bool isa_supported(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    // libgcc's checks include the OS's XSAVE support for the wider registers.
    __builtin_cpu_init();
    switch (isa) {
        case Isa::kAvx512: return __builtin_cpu_supports("avx512f");
        case Isa::kAvx2: return __builtin_cpu_supports("avx2");
        default: return true;
    }
#else
    return isa != Isa::kAvx2 && isa != Isa::kAvx512;
#endif
}

std::vector<std::string> supported_isas() {
    std::vector<std::string> out;
    for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kSse2})
        if (isa_supported(isa)) out.push_back(isa_name(isa));
    return out;
}

const Kernels& kernels_for(Isa isa) {
    if (isa == Isa::kAuto || isa == Isa::kReference)
        isa = isa_supported(Isa::kAvx512) ? Isa::kAvx512
              : isa_supported(Isa::kAvx2) ? Isa::kAvx2
                                          : Isa::kSse2;
    if (!isa_supported(isa)) {
        std::string names;
        for (const auto& n : supported_isas()) names += (names.empty() ? "" : ", ") + n;
        throw std::invalid_argument("isa '" + isa_name(isa) +
                                    "' is not supported by this CPU; supported: " + names);
    }
    switch (isa) {
        case Isa::kAvx512: return kKernelsAvx512;
        case Isa::kAvx2: return kKernelsAvx2;
        default: return kKernelsSse2;
    }
}

AlignedFloats aligned_floats(size_t count) {
    const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes == 0 ? 64 : bytes);
    return AlignedFloats(static_cast<float*>(p));
}

}  // namespace facefill
