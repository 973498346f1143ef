// jnorm's CPU convolution kernels, as XLA FFI handlers (built by jnorm.models.cpu_kernels).
//
// x [B, H, W, Ci] and y, dy [B, Ho, Wo, Co] are NHWC float32, w and dw [kh, kw, Ci, Co]
// are HWIO (the layouts of jnorm.models.conv); strides (sh, sw), low paddings (pt, pl),
// terms whose input position falls in the zero padding are skipped.
//
//   Forward:    y[b, oy, ox, co]   = sum_{ky, kx, ci} x[b, iy, ix, ci] * w[ky, kx, ci, co]
//   KernelGrad: dw[ky, kx, ci, co] = sum_{b, oy, ox} x[b, iy, ix, ci] * dy[b, oy, ox, co]
//   with iy = oy*sh + ky - pt, ix = ox*sw + kx - pl.
//
// Why they exist: XLA:CPU's kernel gradient (Eigen) splits its work between threads
// along its output, which is tiny for the ResNets' layers (kh*kw*Ci x Co against a
// contraction over B*Ho*Wo), so it runs on about one core (benchmarks/README.md).
// KernelGrad splits the contraction instead: the batch is cut into a fixed number of
// chunks, each summed into its own buffer, and the buffers are added in chunk order,
// so the result does not depend on how many threads ran it. Forward computes each
// output element in one fixed order, on whichever thread.
//
// Both keep a register tile of the output (MR rows x kLanes*NV channels) in vector
// registers, so every vector load feeds MR fused multiply-adds. Built with the
// machine's own instruction set (-march=native), at the machine's own vector width:
// kLanes floats per register (16 with AVX-512, 8 with AVX2, else 4) and tiles sized to
// its register file (32 registers with AVX-512, 16 with AVX2). A vector wider than the
// machine's registers would not do: GCC then lowers it element by element (measured on
// an AVX2 machine: 25-30x slower than XLA's convolutions). The tile shapes change only
// which outputs are computed together, not the order of any sum (a build without fused
// multiply-adds still rounds differently). Work is shared between the calling thread and
// XLA's intra-op thread pool.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kForwardRows = 8;  // 8 x 2 accumulators + 2 weights + 1 input: 19 of 32
constexpr int kGradRows = 8;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kForwardRows = 6;  // 6 x 2 accumulators + 2 weights + 1 input: 15 of 16
// 6 x 2 accumulators + 2 gradients + 1 input: 15 of 16 registers. With 4 rows (8
// accumulators) the step at 16 px took 1.02-1.04x as long (benchmarks/README.md).
constexpr int kGradRows = 6;
#else
constexpr int kLanes = 4;
constexpr int kForwardRows = 6;
constexpr int kGradRows = 4;
#endif
// Output channels per full tile (two vectors); Cout is a multiple of 16, so of kLanes.
constexpr int kTileChannels = 2 * kLanes;

typedef float vec __attribute__((vector_size(4 * kLanes)));

inline vec Load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, vec v) { std::memcpy(p, &v, sizeof(v)); }

// Chunks of the batch, each with its own partial sum (fixed: results do not depend on
// the thread count).
constexpr int64_t kChunks = 4;
// Images per group: as many as keep a group's x and dy within this many bytes.
constexpr int64_t kGroupBytes = 384 * 1024;

struct Geometry {
  int64_t batch, h, w, ci, ho, wo, co, kh, kw, sh, sw, pt, pl;
};

// The output positions o (0 <= o < out) whose input position o*s + k - p is in [0, in).
inline void ValidRange(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p,
                       int64_t* lo, int64_t* hi) {
  *lo = p > k ? (p - k + s - 1) / s : 0;
  int64_t last = in - 1 - k + p;  // largest o*s allowed
  *hi = last < 0 ? 0 : std::min(out, last / s + 1);
}

template <int MR, int NV>
void Tile(const Geometry& g, const float* x, const float* dy, int64_t b0, int64_t b1,
          int64_t ky, int64_t kx, int64_t ci0, int64_t co0, float* dw) {
  vec acc[MR][NV] = {};
  int64_t oy_lo, oy_hi, ox_lo, ox_hi;
  ValidRange(g.h, g.ho, ky, g.sh, g.pt, &oy_lo, &oy_hi);
  ValidRange(g.w, g.wo, kx, g.sw, g.pl, &ox_lo, &ox_hi);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t oy = oy_lo; oy < oy_hi; ++oy) {
      const int64_t iy = oy * g.sh + ky - g.pt;
      const float* xrow = x + ((b * g.h + iy) * g.w + kx - g.pl) * g.ci + ci0;
      const float* drow = dy + ((b * g.ho + oy) * g.wo) * g.co + co0;
      // Unrolled: the loop is short (one output row), and its overhead otherwise shows
      // (the SmallResNet step at 16 px 0.885x as long on an AVX2 machine,
      // benchmarks/README.md). The sums keep their order.
#pragma GCC unroll 4
      for (int64_t ox = ox_lo; ox < ox_hi; ++ox) {
        const float* xp = xrow + ox * g.sw * g.ci;
        const float* dp = drow + ox * g.co;
        vec d[NV];
        for (int v = 0; v < NV; ++v) d[v] = Load(dp + kLanes * v);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const float xi = xp[i];
          for (int v = 0; v < NV; ++v) acc[i][v] += xi * d[v];
        }
      }
    }
  }
  float* out = dw + ((ky * g.kw + kx) * g.ci + ci0) * g.co + co0;
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) {
      float* q = out + i * g.co + kLanes * v;
      Store(q, Load(q) + acc[i][v]);
    }
  }
}

// Every output-channel tile of the MR input channels from ci0.
template <int MR>
void RowBlock(const Geometry& g, const float* x, const float* dy, int64_t b0, int64_t b1,
              int64_t ky, int64_t kx, int64_t ci0, float* dw) {
  int64_t co0 = 0;
  for (; co0 + kTileChannels <= g.co; co0 += kTileChannels) {
    Tile<MR, 2>(g, x, dy, b0, b1, ky, kx, ci0, co0, dw);
  }
  if (co0 < g.co) Tile<MR, 1>(g, x, dy, b0, b1, ky, kx, ci0, co0, dw);
}

// Blocks of kGradRows input channels, then the rest in blocks of 4, 2 and 1. A block's
// size changes which outputs are summed together, never the order of a sum.
void Chunk(const Geometry& g, const float* x, const float* dy, int64_t b0, int64_t b1,
           float* dw) {
  std::memset(dw, 0, sizeof(float) * g.kh * g.kw * g.ci * g.co);
  const int64_t image_bytes = 4 * (g.h * g.w * g.ci + g.ho * g.wo * g.co);
  const int64_t group = std::max<int64_t>(1, kGroupBytes / image_bytes);
  for (int64_t gb = b0; gb < b1; gb += group) {
    const int64_t ge = std::min(b1, gb + group);
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t ci0 = 0;
        for (; ci0 + kGradRows <= g.ci; ci0 += kGradRows) {
          RowBlock<kGradRows>(g, x, dy, gb, ge, ky, kx, ci0, dw);
        }
        for (; ci0 + 4 <= g.ci; ci0 += 4) RowBlock<4>(g, x, dy, gb, ge, ky, kx, ci0, dw);
        for (; ci0 + 2 <= g.ci; ci0 += 2) RowBlock<2>(g, x, dy, gb, ge, ky, kx, ci0, dw);
        for (; ci0 < g.ci; ++ci0) RowBlock<1>(g, x, dy, gb, ge, ky, kx, ci0, dw);
      }
    }
  }
}

// Runs body(0) .. body(n - 1), claimed one index at a time by the calling thread and by
// tasks on XLA's thread pool. The caller never waits for an index nobody has started,
// so a busy pool cannot deadlock it (XLA runs independent operations side by side);
// tasks that start late find nothing left. The shared state outlives the call.
class ParallelFor {
 public:
  template <typename F>
  static void Run(ffi::ThreadPool& pool, int64_t n, F body) {
    auto state = std::make_shared<State>();
    state->n = n;
    state->body = body;
    const int64_t helpers = std::min(n, pool.num_threads()) - 1;
    for (int64_t t = 0; t < helpers; ++t) pool.Schedule([state] { state->Claim(); });
    state->Claim();
    std::unique_lock<std::mutex> lock(state->mu);
    state->all_done.wait(lock, [&] { return state->finished == state->n; });
  }

 private:
  struct State {
    int64_t n = 0;
    std::function<void(int64_t)> body;
    std::atomic<int64_t> next{0}, finished{0};
    std::mutex mu;
    std::condition_variable all_done;

    void Claim() {
      for (int64_t i = next++; i < n; i = next++) {
        body(i);
        if (++finished == n) {
          std::lock_guard<std::mutex> lock(mu);
          all_done.notify_all();
        }
      }
    }
  };
};

// The geometry of a convolution from its input, its output and its kernel's dims.
template <typename In, typename Out, typename Kernel>
bool Decode(const In& xd, const Out& yd, const Kernel& wd, int64_t sh, int64_t sw,
            int64_t pt, int64_t pl, Geometry* g) {
  if (xd.size() != 4 || yd.size() != 4 || wd.size() != 4) return false;
  *g = Geometry{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3],
                wd[0], wd[1], sh,    sw,    pt,    pl};
  return yd[0] == g->batch && wd[2] == g->ci && wd[3] == g->co && g->co % 16 == 0 &&
         sh >= 1 && sw >= 1;
}

ffi::Error BadShapes(const char* name) {
  return ffi::Error::InvalidArgument(
      std::string("jnorm ") + name +
      ": shapes do not match or Cout is not a multiple of 16");
}

ffi::Error KernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                      ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                      int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  Geometry g;
  if (!Decode(x.dimensions(), dy.dimensions(), dw->dimensions(), sh, sw, pt, pl, &g)) {
    return BadShapes("kernel_grad");
  }
  const int64_t size = g.kh * g.kw * g.ci * g.co;
  const int64_t chunks = std::max<int64_t>(1, std::min(kChunks, g.batch));
  std::vector<float> partial((chunks - 1) * size);
  float* result = dw->typed_data();
  ParallelFor::Run(pool, chunks, [&](int64_t c) {
    float* out = c == 0 ? result : partial.data() + (c - 1) * size;
    Chunk(g, x.typed_data(), dy.typed_data(), g.batch * c / chunks,
          g.batch * (c + 1) / chunks, out);
  });
  for (int64_t c = 1; c < chunks; ++c) {
    const float* p = partial.data() + (c - 1) * size;
    for (int64_t i = 0; i < size; ++i) result[i] += p[i];
  }
  return ffi::Error::Success();
}

// Forward: MR consecutive output positions (in the flattened order b, oy, ox, so a tile
// may span rows and images) x kLanes*NV output channels. Taps in the padding read zeros.
template <int MR, int NV>
void ForwardTile(const Geometry& g, const float* x, const float* w, const float* zeros,
                 int64_t n0, int64_t co0, float* y) {
  int64_t b[MR], iy0[MR], ix0[MR];
  for (int i = 0; i < MR; ++i) {
    const int64_t n = n0 + i, ox = n % g.wo, oy = (n / g.wo) % g.ho;
    b[i] = n / (g.wo * g.ho);
    iy0[i] = oy * g.sh - g.pt;
    ix0[i] = ox * g.sw - g.pl;
  }
  vec acc[MR][NV] = {};
  for (int64_t ky = 0; ky < g.kh; ++ky) {
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const float* xp[MR];
      bool any = false;
      for (int i = 0; i < MR; ++i) {
        const int64_t iy = iy0[i] + ky, ix = ix0[i] + kx;
        const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
        xp[i] = inside ? x + ((b[i] * g.h + iy) * g.w + ix) * g.ci : zeros;
        any |= inside;
      }
      if (!any) continue;
      const float* wp = w + (ky * g.kw + kx) * g.ci * g.co + co0;
      for (int64_t ci = 0; ci < g.ci; ++ci) {
        vec wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = Load(wp + ci * g.co + kLanes * v);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const float xi = xp[i][ci];
          for (int v = 0; v < NV; ++v) acc[i][v] += xi * wv[v];
        }
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) Store(y + (n0 + i) * g.co + co0 + kLanes * v, acc[i][v]);
  }
}

template <int NV>
void ForwardPositions(const Geometry& g, const float* x, const float* w,
                      const float* zeros, int64_t n0, int64_t n1, int64_t co0, float* y) {
  int64_t n = n0;
  for (; n + kForwardRows <= n1; n += kForwardRows) {
    ForwardTile<kForwardRows, NV>(g, x, w, zeros, n, co0, y);
  }
  for (; n < n1; ++n) ForwardTile<1, NV>(g, x, w, zeros, n, co0, y);
}

// Output positions per parallel task (a whole number of tiles).
constexpr int64_t kPositionsPerTask = 8 * kForwardRows;

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                   ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y, int64_t sh,
                   int64_t sw, int64_t pt, int64_t pl) {
  Geometry g;
  if (!Decode(x.dimensions(), y->dimensions(), w.dimensions(), sh, sw, pt, pl, &g)) {
    return BadShapes("forward");
  }
  const std::vector<float> zeros(g.ci, 0.0f);
  const int64_t positions = g.batch * g.ho * g.wo;
  const int64_t tasks = (positions + kPositionsPerTask - 1) / kPositionsPerTask;
  ParallelFor::Run(pool, tasks, [&](int64_t t) {
    const int64_t n0 = t * kPositionsPerTask;
    const int64_t n1 = std::min(positions, n0 + kPositionsPerTask);
    int64_t co0 = 0;
    for (; co0 + kTileChannels <= g.co; co0 += kTileChannels) {
      ForwardPositions<2>(g, x.typed_data(), w.typed_data(), zeros.data(), n0, n1, co0,
                          y->typed_data());
    }
    if (co0 < g.co) {
      ForwardPositions<1>(g, x.typed_data(), w.typed_data(), zeros.data(), n0, n1, co0,
                          y->typed_data());
    }
  });
  return ffi::Error::Success();
}

}  // namespace

#define JNORM_CONV_BINDING()      \
  ffi::Ffi::Bind()                             \
      .Ctx<ffi::ThreadPool>()                  \
      .Arg<ffi::Buffer<ffi::F32>>()            \
      .Arg<ffi::Buffer<ffi::F32>>()            \
      .Ret<ffi::Buffer<ffi::F32>>()            \
      .Attr<int64_t>("sh")                     \
      .Attr<int64_t>("sw")                     \
      .Attr<int64_t>("pt")                     \
      .Attr<int64_t>("pl")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JnormConvKernelGrad, KernelGrad, JNORM_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JnormConvForward, Forward, JNORM_CONV_BINDING());

// The vector width this build runs at, in floats (jnorm.models.cpu_kernels.vector_lanes).
extern "C" int JnormVectorLanes() { return kLanes; }
