// Run-time support for the batch: instruction-set names and CPU checks, aligned buffers, the
// thread pool, and the landmark penalty.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <thread>

#include <sched.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "landmarks.h"

namespace facefill {

namespace {

// 0 = the CPUs this process may run on (its affinity mask: a container's or taskset's limit),
// not the host's core count: a team larger than that spins at its barriers.
int resolve_threads(int num_threads) {
    if (num_threads > 0) return num_threads;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

}  // namespace


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

void parallel_for(long n, int num_threads, const std::function<void(long, long)>& fn) {
    if (n <= 0) return;
    const long workers = std::min<long>(resolve_threads(num_threads), n);
    if (workers == 1) {
        fn(0, n);
        return;
    }
    std::exception_ptr first_error;
    std::mutex error_mutex;
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(workers));
    const long chunk = (n + workers - 1) / workers;
    for (long w = 0; w < workers; ++w) {
        const long begin = w * chunk, end = std::min(n, begin + chunk);
        if (begin >= end) break;
        threads.emplace_back([&, begin, end] {
            try {
                fn(begin, end);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!first_error) first_error = std::current_exception();
            }
        });
    }
    for (auto& t : threads) t.join();
    if (first_error) std::rethrow_exception(first_error);
}

void Team::barrier() {
    const unsigned gen = generation_.load(std::memory_order_acquire);
    if (failed_.load(std::memory_order_relaxed)) throw Aborted();
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
        arrived_.store(0, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        return;
    }
    // A barrier ends within microseconds when every member has a core; when the cores are busy
    // with other work, yield instead of burning the time slice a waited-for member needs.
    for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
        if (failed_.load(std::memory_order_relaxed)) throw Aborted();
        if (spins < 2000) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            std::this_thread::yield();
        }
    }
}

namespace {

// Runs fn(team, rank) for one member, keeping the first error and telling the others to stop.
void run_member(Team& team, int rank, const std::function<void(Team&, int)>& fn,
                std::exception_ptr& first_error, std::mutex& error_mutex, std::atomic<bool>& failed) {
    try {
        fn(team, rank);
    } catch (const Team::Aborted&) {
        // another member failed; its exception is the one to report
    } catch (...) {
        {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!first_error) first_error = std::current_exception();
        }
        failed.store(true, std::memory_order_relaxed);
    }
}

}  // namespace

void run_team(int num_threads, long max_members, const std::function<void(Team&, int)>& fn) {
    const int want = static_cast<int>(std::max(1L, std::min<long>(resolve_threads(num_threads), max_members)));
    std::exception_ptr first_error;
    std::mutex error_mutex;
#ifdef _OPENMP
    if (want > 1 && !omp_in_parallel()) {
        // The members are OpenMP threads. In a process that runs torch they come from the same
        // runtime and pool as torch's (libgomp.so.1 is loaded once), so the batch picks up
        // torch's idle workers instead of competing with them, still spinning, for the cores
        // (docs/performance.md). The team is as large as the runtime grants.
        std::optional<Team> team;
#pragma omp parallel num_threads(want)
        {
#pragma omp single
            team.emplace(omp_get_num_threads());  // the single's barrier: every member sees it
            run_member(*team, omp_get_thread_num(), fn, first_error, error_mutex, team->failed_);
        }
        if (first_error) std::rethrow_exception(first_error);
        return;
    }
#endif
    Team team(want);
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(team.size() - 1));
    try {
        for (int rank = 1; rank < team.size(); ++rank)
            threads.emplace_back([&, rank] { run_member(team, rank, fn, first_error, error_mutex, team.failed_); });
    } catch (...) {  // no thread: the started members must not wait for it
        team.failed_.store(true, std::memory_order_relaxed);
        for (auto& t : threads) t.join();
        throw;
    }
    run_member(team, 0, fn, first_error, error_mutex, team.failed_);
    for (auto& t : threads) t.join();
    if (first_error) std::rethrow_exception(first_error);
}

namespace {

// rint for 0 <= v <= 255 without SSE4.1's roundps: adding 2^23 leaves no fraction bits, so the
// float addition itself rounds to an integer, half to even (the default rounding mode);
// subtracting 2^23 is exact. The build has no -ffast-math, so the pair is not folded away.
// Branch-free, so that the loop below vectorizes.
inline float channel_value(float x) {
    float v = (x + 1.0f) * 127.5f;
    v = v > 0.0f ? v : 0.0f;  // maxps / minps
    v = v < 255.0f ? v : 255.0f;
    return (v + 8388608.0f) - 8388608.0f;
}

// One image's plane of intensities; restrict lets the loops vectorize (uint8_t may alias
// floats). (r + g + b) // 3 for sums 0..765 is exact in float (every sum is checked in the
// tests); a hole pixel is then set to the fill's intensity in a second pass (a select inside
// the first loop kept it from vectorizing: 2.5x the time).
void intensity_plane(const float* __restrict r, const float* __restrict g, const float* __restrict b,
                     const float* __restrict h, float fill, long hw, uint8_t* __restrict o) {
    const float third = 1.0f / 3.0f;
    for (long p = 0; p < hw; ++p) {
        const float v = channel_value(r[p]) + channel_value(g[p]) + channel_value(b[p]);
        o[p] = static_cast<uint8_t>(static_cast<int>(v * third));
    }
    if (h) {
        const uint8_t filled = static_cast<uint8_t>(static_cast<int>(fill * third));
        for (long p = 0; p < hw; ++p) o[p] = h[p] > 0.5f ? filled : o[p];
    }
}

}  // namespace

void intensity_u8(const float* images, const float* holes, long n, long hw, uint8_t* out) {
    const float fill = 3.0f * channel_value(0.0f);
#pragma omp parallel for schedule(static) if (n * hw >= (1L << 18))
    for (long i = 0; i < n; ++i) {
        const float* r = images + i * 3 * hw;
        intensity_plane(r, r + hw, r + 2 * hw, holes ? holes + i * hw : nullptr, fill, hw, out + i * hw);
    }
}

void landmark_penalty(const float* pred, long n, long num_parts, const float* ref,
                      float margin_px, float step, double* out) {
    for (long i = 0; i < n; ++i) {
        const float* p = pred + i * num_parts * 2;
        double total = 0.0;
        for (long k = 0; k < 2 * num_parts; ++k)
            if (std::fabs(p[k] - ref[k]) > margin_px) total += step;
        out[i] = total;
    }
}

}  // namespace facefill
