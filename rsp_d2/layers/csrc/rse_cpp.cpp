// Fused CPU loops of the RSE relation (Eq. 1-3 of the paper), used by rsp_d2/layers/rse_cpp.py.
//
// Three window primitives on contiguous head-split maps, each a single pass over the output
// rows (threads split the rows; a row's work touches only the 2r*dilation+1 input rows around
// it, which stay in cache across the k*k window offsets). Everything vectorizes along a row
// (the W axis, contiguous in NCHW), so no transpose to channels-last is needed:
//
//   window_dot(a, b, bias, fill)   out[o, i, j] = sum_d a[d, i, j] * (b[d, i+dy_o, j+dx_o] + bias[o, d])
//                                  (fill where the neighbour is off the map): the logits of Eq. 2-3;
//                                  given the softmax weights, dL/dw followed by the softmax's
//                                  backward, dL/dlogits, on each row while it is in cache.
//   window_gather(w, b, bias)      out[d, i, j] = sum_o w[o, i, j] * (b[d, i+dy_o, j+dx_o] + bias[o, d])
//                                  over on-map neighbours: the aggregation of Eq. 1, and dL/dq.
//   window_scatter(w, a)           out[d, i, j] = sum_o w[o, i-dy_o, j-dx_o] * a[d, i-dy_o, j-dx_o]:
//                                  the adjoint of gather w.r.t. b (dL/dk, dL/dv), written as a
//                                  gather so that threads never write the same pixel.
//
// Shapes: a, b: (N, G, D, H, W); w, out of window_dot: (N, G, K*K, H, W); bias: (K*K, G, D).
// On x86-64 with GCC the loops are compiled three times, for AVX-512F, for AVX2+FMA and for the
// baseline ISA, and the CPU's features pick at run time (isa="auto"), so one build runs
// everywhere at the width of the machine (other compilers/CPUs get the baseline loops: correct,
// not tuned). FMA builds round a*b+c once, so the last bits of results differ between ISAs.
#include <torch/extension.h>

#include <algorithm>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RSP_X86_DISPATCH 1
#define RSP_INLINE __attribute__((always_inline)) inline
#else
#define RSP_X86_DISPATCH 0
#define RSP_INLINE inline
#endif

struct Geometry {
  int64_t N, G, D, H, W, K, dilation;
  int64_t KK() const { return K * K; }
  int64_t r() const { return K / 2; }
  int64_t dy(int64_t o) const { return (o / K - r()) * dilation; }
  int64_t dx(int64_t o) const { return (o % K - r()) * dilation; }
};

// One output row (n, g, i) of window_dot. Loop order: window row (dy), channel, window column
// (dx), pixel: the k output rows of one dy and the two input rows of one channel stay in L1
// while the k column offsets reuse them.
template <typename T>
RSP_INLINE void dot_row(const Geometry& s, const T* a, const T* b, const T* bias, T fill,
                        const T* smw, T* out, int64_t ng, int64_t i, std::vector<T>& total) {
  const int64_t HW = s.H * s.W, g = ng % s.G;
  const T* a0 = a + ng * s.D * HW + i * s.W;
  const T* b0 = b + ng * s.D * HW;
  T* out0 = out + ng * s.KK() * HW + i * s.W;
  for (int64_t o = 0; o < s.KK(); ++o) {  // fill off-map entries, zero the rest
    const int64_t ii = i + s.dy(o), dx = s.dx(o);
    const int64_t j0 = std::max<int64_t>(0, -dx), j1 = std::min<int64_t>(s.W, s.W - dx);
    T* row = out0 + o * HW;
    if (ii < 0 || ii >= s.H || j0 >= j1) {
      std::fill(row, row + s.W, fill);
      continue;
    }
    std::fill(row, row + j0, fill);
    std::fill(row + j0, row + j1, T(0));
    std::fill(row + j1, row + s.W, fill);
  }
  for (int64_t ky = 0; ky < s.K; ++ky) {
    const int64_t ii = i + s.dy(ky * s.K);
    if (ii < 0 || ii >= s.H) continue;
    for (int64_t d = 0; d < s.D; ++d) {
      const T* __restrict__ ar = a0 + d * HW;
      const T* brow = b0 + d * HW + ii * s.W;
      for (int64_t kx = 0; kx < s.K; ++kx) {
        const int64_t o = ky * s.K + kx, dx = s.dx(o);
        const int64_t j0 = std::max<int64_t>(0, -dx), j1 = std::min<int64_t>(s.W, s.W - dx);
        T* __restrict__ acc = out0 + o * HW;
        const T* __restrict__ br = brow + dx;
        if (bias) {
          const T bd = bias[(o * s.G + g) * s.D + d];
          for (int64_t j = j0; j < j1; ++j) acc[j] += ar[j] * (br[j] + bd);
        } else {
          for (int64_t j = j0; j < j1; ++j) acc[j] += ar[j] * br[j];
        }
      }
    }
  }
  if (!smw) return;
  // The softmax's backward over the window (Eq. 2), in place of dL/dw while the row's k*k
  // outputs are in cache: dlogit_o = w_o * (dw_o - sum_o' w_o' dw_o'). Off-map w_o = 0.
  const T* w0 = smw + ng * s.KK() * HW + i * s.W;
  total.assign(s.W, T(0));
  T* __restrict__ tot = total.data();
  for (int64_t o = 0; o < s.KK(); ++o) {
    const T* __restrict__ wr = w0 + o * HW;
    const T* __restrict__ dw = out0 + o * HW;
    for (int64_t j = 0; j < s.W; ++j) tot[j] += wr[j] * dw[j];
  }
  for (int64_t o = 0; o < s.KK(); ++o) {
    const T* __restrict__ wr = w0 + o * HW;
    T* __restrict__ dw = out0 + o * HW;
    for (int64_t j = 0; j < s.W; ++j) dw[j] = wr[j] * (dw[j] - tot[j]);
  }
}

// Channels of window_gather/scatter accumulated together: their output rows stay in L1 while
// each weight row, read once from L2, serves all of them.
constexpr int64_t kChannelBlock = 8;

// One output row (n, g, i) of window_gather (sign = +1) or window_scatter (sign = -1). With
// sign = -1 the weights are read at the neighbour (i - dy, j - dx) instead of at (i, j).
template <typename T>
RSP_INLINE void gather_row(const Geometry& s, const T* w, const T* b, const T* bias, int sign,
                           T* out, int64_t ng, int64_t i) {
  const int64_t HW = s.H * s.W, g = ng % s.G;
  const T* w0 = w + ng * s.KK() * HW;
  const T* b0 = b + ng * s.D * HW;
  T* out0 = out + ng * s.D * HW + i * s.W;
  for (int64_t d0 = 0; d0 < s.D; d0 += kChannelBlock) {
    const int64_t d1 = std::min(s.D, d0 + kChannelBlock);
    for (int64_t d = d0; d < d1; ++d) std::fill(out0 + d * HW, out0 + d * HW + s.W, T(0));
    for (int64_t o = 0; o < s.KK(); ++o) {
      const int64_t ii = i + sign * s.dy(o), dx = sign * s.dx(o);
      const int64_t j0 = std::max<int64_t>(0, -dx), j1 = std::min<int64_t>(s.W, s.W - dx);
      if (ii < 0 || ii >= s.H || j0 >= j1) continue;
      const T* __restrict__ wr = w0 + o * HW + (sign < 0 ? ii * s.W + dx : i * s.W);
      for (int64_t d = d0; d < d1; ++d) {
        T* __restrict__ acc = out0 + d * HW;
        const T* __restrict__ br = b0 + d * HW + ii * s.W + dx;
        if (bias) {
          const T bd = bias[(o * s.G + g) * s.D + d];
          for (int64_t j = j0; j < j1; ++j) acc[j] += wr[j] * (br[j] + bd);
        } else {
          for (int64_t j = j0; j < j1; ++j) acc[j] += wr[j] * br[j];
        }
      }
    }
  }
}

template <typename T>
RSP_INLINE void dot_rows(const Geometry& s, const T* a, const T* b, const T* bias, T fill,
                         const T* smw, T* out, int64_t begin, int64_t end) {
  std::vector<T> total;
  for (int64_t r = begin; r < end; ++r)
    dot_row(s, a, b, bias, fill, smw, out, r / s.H, r % s.H, total);
}

template <typename T>
RSP_INLINE void gather_rows(const Geometry& s, const T* w, const T* b, const T* bias, int sign,
                            T* out, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) gather_row(s, w, b, bias, sign, out, r / s.H, r % s.H);
}

// The ISAs the loops are compiled for, widest first.
enum class Isa { kAvx512, kAvx2, kBaseline };

#if RSP_X86_DISPATCH
// The same loops compiled for AVX-512F and for AVX2 + FMA (the always-inline templates take the
// caller's ISA).
#define RSP_AVX512 __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512")))
#define RSP_AVX2 __attribute__((target("avx2,fma")))
template <typename T>
RSP_AVX512 void dot_rows_avx512(const Geometry& s, const T* a, const T* b, const T* bias, T fill,
                                const T* smw, T* out, int64_t begin, int64_t end) {
  dot_rows<T>(s, a, b, bias, fill, smw, out, begin, end);
}
template <typename T>
RSP_AVX2 void dot_rows_avx2(const Geometry& s, const T* a, const T* b, const T* bias, T fill,
                            const T* smw, T* out, int64_t begin, int64_t end) {
  dot_rows<T>(s, a, b, bias, fill, smw, out, begin, end);
}
template <typename T>
RSP_AVX512 void gather_rows_avx512(const Geometry& s, const T* w, const T* b, const T* bias,
                                   int sign, T* out, int64_t begin, int64_t end) {
  gather_rows<T>(s, w, b, bias, sign, out, begin, end);
}
template <typename T>
RSP_AVX2 void gather_rows_avx2(const Geometry& s, const T* w, const T* b, const T* bias, int sign,
                               T* out, int64_t begin, int64_t end) {
  gather_rows<T>(s, w, b, bias, sign, out, begin, end);
}
#endif

bool isa_supported(Isa isa) {
#if RSP_X86_DISPATCH
  // libgcc's CPU model also checks that the OS saves the wide registers (XCR0).
  if (isa == Isa::kAvx512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  if (isa == Isa::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  if (isa != Isa::kBaseline) return false;
#endif
  return true;
}

const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "baseline";
}

Isa best_isa() {
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (isa_supported(isa)) return isa;
  }
  return Isa::kBaseline;
}

// "auto" -> the widest this CPU runs; a named ISA must be one this build and CPU can run.
Isa parse_isa(const std::string& name) {
  if (name == "auto") return best_isa();
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (name == isa_name(isa)) {
      TORCH_CHECK(isa_supported(isa), "rse_cpp: isa='", name, "' cannot run here: ",
                  RSP_X86_DISPATCH ? "this CPU lacks it" : "this build has only 'baseline'",
                  " (the widest available is '", isa_name(best_isa()), "')");
      return isa;
    }
  }
  TORCH_CHECK(false, "rse_cpp: isa must be 'auto', 'avx512', 'avx2' or 'baseline', got '", name,
              "'");
  return Isa::kBaseline;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (isa_supported(isa)) out.emplace_back(isa_name(isa));
  }
  return out;
}

// Runs fn(begin, end) over [0, rows) split into contiguous parts, one per intra-op thread
// (torch.get_num_threads()). Plain threads: the torch wheel's OpenMP runtime is not ours to
// link, and a handful of calls per forward makes thread start-up (tens of us) negligible.
// fn must not throw (the callers check their arguments before).
template <typename Fn>
void parallel_rows(int64_t rows, int64_t work_per_row, const Fn& fn) {
  if (rows <= 0) return;
  int64_t threads = at::get_num_threads();
  // Starting and joining a thread takes up to ~0.1 ms: below a few million multiply-adds (a
  // fraction of a millisecond) a thread costs more than it saves.
  threads = std::min<int64_t>(threads, rows * work_per_row / (int64_t(1) << 22));
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, rows));
  const int64_t step = (rows + threads - 1) / threads;
  std::vector<std::thread> pool;
  int64_t begin = step;  // [0, step) is the calling thread's
  for (; begin < rows; begin += step) {
    const int64_t end = std::min(rows, begin + step);
    try {
      pool.emplace_back([&fn, begin, end] { fn(begin, end); });
    } catch (const std::system_error&) {  // no thread to be had (limits): do the rest here
      break;
    }
  }
  fn(0, std::min(rows, step));
  for (; begin < rows; begin += step) fn(begin, std::min(rows, begin + step));
  for (auto& th : pool) th.join();
}

Geometry geometry(const at::Tensor& maps, int64_t kernel_size, int64_t dilation) {
  TORCH_CHECK(maps.dim() == 5, "rse_cpp: expected (N, G, D, H, W), got ", maps.sizes());
  return Geometry{maps.size(0), maps.size(1), maps.size(2), maps.size(3), maps.size(4),
                  kernel_size, dilation};
}

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == like.scalar_type(),
              "rse_cpp: ", name, " must be a contiguous CPU tensor of ", like.scalar_type());
}

const void* bias_ptr(const std::optional<at::Tensor>& bias, const at::Tensor& like,
                     const Geometry& s) {
  if (!bias.has_value()) return nullptr;
  check(*bias, like, "bias");
  TORCH_CHECK(bias->numel() == s.KK() * s.G * s.D, "rse_cpp: bias must be (K*K, G, D)");
  return bias->data_ptr();
}

at::Tensor window_dot(const at::Tensor& a, const at::Tensor& b,
                      const std::optional<at::Tensor>& bias, int64_t kernel_size,
                      int64_t dilation, double fill,
                      const std::optional<at::Tensor>& softmax_weights, const std::string& isa) {
  const Geometry s = geometry(a, kernel_size, dilation);
  check(a, a, "a");
  check(b, a, "b");
  TORCH_CHECK(a.sizes() == b.sizes(), "rse_cpp: window_dot needs a and b of one shape");
  if (softmax_weights.has_value()) {
    const at::Tensor& w = *softmax_weights;
    check(w, a, "softmax_weights");
    TORCH_CHECK(w.dim() == 5 && w.size(0) == s.N && w.size(1) == s.G && w.size(2) == s.KK() &&
                    w.size(3) == s.H && w.size(4) == s.W,
                "rse_cpp: softmax_weights must be (N, G, K*K, H, W), got ", w.sizes());
  }
  const Isa which = parse_isa(isa);
  at::Tensor out = at::empty({s.N, s.G, s.KK(), s.H, s.W}, a.options());
  const void* bp = bias_ptr(bias, a, s);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "window_dot", [&] {
    const scalar_t *ap = a.data_ptr<scalar_t>(), *bb = b.data_ptr<scalar_t>();
    const scalar_t* biasp = static_cast<const scalar_t*>(bp);
    const scalar_t* smw = softmax_weights.has_value() ? softmax_weights->data_ptr<scalar_t>()
                                                      : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t f = static_cast<scalar_t>(fill);
    parallel_rows(s.N * s.G * s.H, s.KK() * s.D * s.W, [&](int64_t begin, int64_t end) {
#if RSP_X86_DISPATCH
      if (which == Isa::kAvx512)
        return dot_rows_avx512<scalar_t>(s, ap, bb, biasp, f, smw, op, begin, end);
      if (which == Isa::kAvx2)
        return dot_rows_avx2<scalar_t>(s, ap, bb, biasp, f, smw, op, begin, end);
#endif
      dot_rows<scalar_t>(s, ap, bb, biasp, f, smw, op, begin, end);
    });
  });
  return out;
}

at::Tensor window_gather_impl(const at::Tensor& w, const at::Tensor& b,
                              const std::optional<at::Tensor>& bias, int64_t kernel_size,
                              int64_t dilation, int sign, const std::string& isa) {
  const Geometry s = geometry(b, kernel_size, dilation);
  const Isa which = parse_isa(isa);
  check(b, b, "b");
  check(w, b, "w");
  TORCH_CHECK(w.dim() == 5 && w.size(0) == s.N && w.size(1) == s.G && w.size(2) == s.KK() &&
                  w.size(3) == s.H && w.size(4) == s.W,
              "rse_cpp: weights must be (N, G, K*K, H, W), got ", w.sizes());
  at::Tensor out = at::empty_like(b);
  const void* bp = bias_ptr(bias, b, s);
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "window_gather", [&] {
    const scalar_t *wp = w.data_ptr<scalar_t>(), *bb = b.data_ptr<scalar_t>();
    const scalar_t* biasp = static_cast<const scalar_t*>(bp);
    scalar_t* op = out.data_ptr<scalar_t>();
    parallel_rows(s.N * s.G * s.H, s.KK() * s.D * s.W, [&](int64_t begin, int64_t end) {
#if RSP_X86_DISPATCH
      if (which == Isa::kAvx512)
        return gather_rows_avx512<scalar_t>(s, wp, bb, biasp, sign, op, begin, end);
      if (which == Isa::kAvx2)
        return gather_rows_avx2<scalar_t>(s, wp, bb, biasp, sign, op, begin, end);
#endif
      gather_rows<scalar_t>(s, wp, bb, biasp, sign, op, begin, end);
    });
  });
  return out;
}

at::Tensor window_gather(const at::Tensor& w, const at::Tensor& b,
                         const std::optional<at::Tensor>& bias, int64_t kernel_size,
                         int64_t dilation, const std::string& isa) {
  return window_gather_impl(w, b, bias, kernel_size, dilation, +1, isa);
}

at::Tensor window_scatter(const at::Tensor& w, const at::Tensor& a, int64_t kernel_size,
                          int64_t dilation, const std::string& isa) {
  return window_gather_impl(w, a, std::nullopt, kernel_size, dilation, -1, isa);
}

}  // namespace

#ifndef RSP_SOURCE_SHA
#define RSP_SOURCE_SHA "unknown"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The GIL is released: other Python threads (data loaders) keep running. `isa` names the
  // loops to run: "auto" (the widest this CPU has), or one of available_isas() (tests run
  // each against the reference).
  m.def("window_dot", &window_dot, "logits of Eq. 2-3 over the k x k window (given the softmax "
        "weights: their gradient)",
        py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("kernel_size"), py::arg("dilation"),
        py::arg("fill"), py::arg("softmax_weights") = py::none(), py::arg("isa") = "auto",
        py::call_guard<py::gil_scoped_release>());
  m.def("window_gather", &window_gather, "aggregation of Eq. 1", py::arg("w"), py::arg("b"),
        py::arg("bias"), py::arg("kernel_size"), py::arg("dilation"), py::arg("isa") = "auto",
        py::call_guard<py::gil_scoped_release>());
  m.def("window_scatter", &window_scatter, "adjoint of window_gather w.r.t. the map",
        py::arg("w"), py::arg("a"), py::arg("kernel_size"), py::arg("dilation"),
        py::arg("isa") = "auto", py::call_guard<py::gil_scoped_release>());
  m.def("available_isas", &available_isas, "the loops' ISAs this build and CPU run, widest first");
  m.def("best_isa", []() { return std::string(isa_name(best_isa())); },
        "the ISA isa='auto' runs");
  // setup.py compiles in a hash of this file, so Python can refuse a stale binary.
  m.attr("source_sha") = RSP_SOURCE_SHA;
}
