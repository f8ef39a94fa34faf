// Fused CPU loops of the RSE relation (Eq. 1-3 of the paper), used by rsp_d2/layers/rse_cpp.py.
//
// Three window primitives on contiguous head-split maps, each a single pass over the output
// rows (threads split the rows). Everything vectorizes along a row (the W axis, contiguous in
// NCHW), so no transpose to channels-last is needed:
//
//   window_dot(a, b, bias, fill)   out[o, i, j] = sum_d a[d, i, j] * (b[d, i+dy_o, j+dx_o] + bias[o, d])
//                                  (fill where the neighbour is off the map): the logits of Eq. 2-3,
//                                  and, given the softmax weights, dL/dlogits in backward.
//   window_gather(w, b, bias)      out[d, i, j] = sum_o w[o, i, j] * (b[d, i+dy_o, j+dx_o] + bias[o, d])
//                                  over on-map neighbours: the aggregation of Eq. 1, and dL/dq.
//   window_scatter(w, a)           out[d, i, j] = sum_o w[o, i-dy_o, j-dx_o] * a[d, i-dy_o, j-dx_o]:
//                                  the adjoint of gather w.r.t. b (dL/dk, dL/dv), written as a
//                                  gather so that threads never write the same pixel.
//
// Shapes: a, b: (N, G, D, H, W); w, out of window_dot: (N, G, K*K, H, W); bias: (K*K, G, D).
//
// How the loops are laid out:
// - The rows of the maps read at a neighbour are copied, as the loops reach them, into a small
//   per-thread ring of rows with a zero border (Band: the 2R+1 rows one output row reads), so
//   the inner loops have no bounds tests: an off-map column reads zeros, and contributes
//   nothing because its weight is zero too (window_dot writes `fill` there afterwards); an
//   off-map row is skipped. No padded copy of a whole map is made: a fresh map-sized buffer
//   costs a page fault per page on first touch, more than the copy itself.
// - A block of output pixels of one row (one SIMD register wide) keeps its sums in registers
//   across the whole reduction: up to 8 window columns per register set in window_dot (one
//   load of a[d] serves all of them), 8 channels in window_gather/scatter (16 with AVX-512's
//   32 registers; one load of the weight serves all of them). Each multiply-add then costs
//   about one load and no store.
// - window_dot adds its bias (the position embedding of Eq. 3) to b as the loops read it, from
//   a (K*K, D) table that stays in L1; window_gather's bias term is a matrix product over the
//   window, done by torch (BLAS) into the output before the loops add the rest.
//
// - bfloat16 maps (mixed precision: torch.autocast) are read as they are, 16 bits per value, and
//   widened to float where the loops copy them (a Band's rows, a block's column); the sums,
//   the weights and the outputs are float. The loops make no float copy of a map.
//
// On x86-64 with GCC the loops are compiled three times, for AVX-512F, for AVX2+FMA and for the
// baseline ISA (SSE2), and the CPU's features pick one at run time (`isa="auto"`), so one
// build runs everywhere at the width of the machine. Other compilers/CPUs get the baseline
// loops (GCC/Clang vector extensions, 16-byte vectors). FMA builds round a*b+c once, so the
// last bits of results differ between the ISAs.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RSP_X86_DISPATCH 1
#define RSP_INLINE __attribute__((always_inline)) inline
#else
#define RSP_X86_DISPATCH 0
#define RSP_INLINE inline
#endif

// Widest register, in lanes of float: a Band's rows hold W rounded up to a multiple of it (plus
// the border), so a register-wide load never leaves its row.
constexpr int64_t kMaxFloatLanes = 16;
// Window columns (window_dot) and channels (window_gather/scatter) summed per register set.
constexpr int kBlock = 8;

template <typename T, int BYTES>
struct VecOf {
  typedef T type __attribute__((vector_size(BYTES)));
};

// Unaligned vector load/store of the first n lanes (kFull: all of them, one instruction); the
// lanes past n load as zero and are not stored.
template <typename V, bool kFull = true, typename T>
RSP_INLINE V load(const T* p, int n = 0) {
  V v = {};
  std::memcpy(&v, p, kFull ? sizeof(V) : n * sizeof(T));
  return v;
}

template <bool kFull = true, typename V, typename T>
RSP_INLINE void store(T* p, const V& v, int n = 0) {
  std::memcpy(p, &v, kFull ? sizeof(V) : n * sizeof(T));
}

// to[x] = from[x] for x < n: a map's values (storage type S) as the loops' type T. bfloat16
// (S = uint16_t, its bits) is the top half of a float: widened exactly by a shift.
template <typename T, typename S>
RSP_INLINE void widen(const S* from, T* to, int64_t n) {
  if constexpr (std::is_same_v<S, T>) {
    std::memcpy(to, from, n * sizeof(T));
  } else {
    static_assert(std::is_same_v<S, uint16_t> && std::is_same_v<T, float>, "bfloat16 -> float");
    for (int64_t x = 0; x < n; ++x) {
      const uint32_t bits = static_cast<uint32_t>(from[x]) << 16;
      std::memcpy(to + x, &bits, sizeof(float));
    }
  }
}

struct Geometry {
  int64_t N, G, D, H, W, K, dilation;
  int64_t KK() const { return K * K; }
  int64_t r() const { return K / 2; }
  int64_t R() const { return r() * dilation; }  // the border of a Band's rows
  int64_t Wp() const { return (W + kMaxFloatLanes - 1) / kMaxFloatLanes * kMaxFloatLanes + 2 * R(); }
  int64_t dy(int64_t o) const { return (o / K - r()) * dilation; }
  int64_t dx(int64_t o) const { return (o % K - r()) * dilation; }
};

// Scratch of one thread: register-wide columns of the maps a block of pixels reads many
// times, copied out of the (N, G, *, H, W) maps once. In those maps the channels (or window
// offsets) of one pixel lie H*W apart, a power of two for typical sizes, so they all fall in
// one set of the L1 cache and evict each other; the copies are contiguous.
template <typename T>
struct Scratch {
  std::vector<T> column;  // (D and/or K*K) x lanes
  std::vector<T> sums;    // K*K x lanes: window_dot's outputs for the block
  std::vector<const T*> rows;
};

// The rows [i - R, i + R] of one (n, g) map of `planes` planes (channels or window offsets) that
// an output row i reads, each with a zero border (R left; R plus W's rounding to whole registers
// right): a ring of 2R+1 slots, a row copied in when first asked for. Rows come in increasing
// order within a thread's part, so each source row is copied once (2R more at its start).
template <typename T, typename S = T>
struct Band {
  const S* src = nullptr;  // (N*G, planes, H, W), widened to T as rows are copied
  int64_t planes = 0, H = 0, W = 0, Wp = 0, R = 0, slots = 0;
  std::vector<T> buf;       // [slot][plane][Wp], zero where no row is ever copied
  std::vector<int64_t> held;  // the (ng * H + row) in each slot, -1 for none

  void reset(const S* source, int64_t n_planes, const Geometry& s) {
    src = source, planes = n_planes, H = s.H, W = s.W, Wp = s.Wp(), R = s.R();
    slots = 2 * R + 1;
    buf.assign(slots * planes * Wp, T(0));
    held.assign(slots, -1);
  }

  // Plane 0 of row ii of map ng, its column 0 at +R; plane p at +p * Wp. Valid until a row
  // more than 2R away is asked for.
  RSP_INLINE const T* row(int64_t ng, int64_t ii) {
    const int64_t slot = ii % slots, key = ng * H + ii;
    T* base = buf.data() + slot * planes * Wp;
    if (held[slot] != key) {
      const S* from = src + ng * planes * H * W + ii * W;
      for (int64_t p = 0; p < planes; ++p) widen(from + p * H * W, base + p * Wp + R, W);
      held[slot] = key;
    }
    return base;
  }
};

// out[t] += sum_d a[d] * (b[d * b_step + t * dil] + pos[t * D + d]) for t < KB, each a register
// of pixels: KB window columns of one window row, summed in registers across the channel loop.
// kPos: the position embedding of each window offset (Eq. 3) added to the key as it is read,
// a broadcast from a table that stays in L1, instead of a separate (K*K x D) product pass.
template <typename T, int BYTES, int KB, bool kPos>
RSP_INLINE void dot_block(const T* a, const T* b, int64_t b_step, int64_t D, int64_t dil,
                          const T* pos, T* out) {
  using V = typename VecOf<T, BYTES>::type;
  constexpr int L = BYTES / sizeof(T);
  V acc[KB];
  for (int t = 0; t < KB; ++t) acc[t] = load<V>(out + t * L);
  for (int64_t d = 0; d < D; ++d) {
    const V av = load<V>(a + d * L);
    const T* bd = b + d * b_step;  // a Band's row: whole registers are ours
    for (int t = 0; t < KB; ++t) {
      if constexpr (kPos) {
        acc[t] += av * (load<V>(bd + t * dil) + pos[t * D + d]);
      } else {
        acc[t] += av * load<V>(bd + t * dil);
      }
    }
  }
  for (int t = 0; t < KB; ++t) store(out + t * L, acc[t]);
}

// out[t * out_step] (+)= sum_o w[o] * b[o][t * b_step] for t < KB channels, each a register of
// pixels (the first n stored): the weight of each window offset, loaded once, serves the KB
// channels summed in registers.
template <typename T, int BYTES, int KB, bool kFull>
RSP_INLINE void gather_block(const T* w, const T* const* b, int64_t n_o, int64_t b_step,
                             T* out, int64_t out_step, int n, bool accumulate) {
  using V = typename VecOf<T, BYTES>::type;
  constexpr int L = BYTES / sizeof(T);
  V acc[KB];
  for (int t = 0; t < KB; ++t) acc[t] = accumulate ? load<V, kFull>(out + t * out_step, n) : V{};
  for (int64_t o = 0; o < n_o; ++o) {
    const V wv = load<V>(w + o * L);
    const T* bo = b[o];
    for (int t = 0; t < KB; ++t) acc[t] += wv * load<V>(bo + t * b_step);
  }
  for (int t = 0; t < KB; ++t) store<kFull>(out + t * out_step, acc[t], n);
}

// Copies rows x (n of L lanes, the rest zero) from src (rows src_step apart) to dst (L apart),
// widening a map's storage type S to T.
template <typename T, int BYTES, typename S = T>
RSP_INLINE void copy_column(const S* src, int64_t src_step, int64_t rows, int n, T* dst) {
  using V = typename VecOf<T, BYTES>::type;
  constexpr int L = BYTES / sizeof(T);
  if constexpr (!std::is_same_v<S, T>) {
    for (int64_t r = 0; r < rows; ++r) {
      widen(src + r * src_step, dst + r * L, n);
      std::fill(dst + r * L + n, dst + (r + 1) * L, T(0));
    }
  } else if (n == L) {
    for (int64_t r = 0; r < rows; ++r) store(dst + r * L, load<V>(src + r * src_step));
  } else {
    for (int64_t r = 0; r < rows; ++r) store(dst + r * L, load<V, false>(src + r * src_step, n));
  }
}

// Calls body(std::integral_constant<int, count>()) for count in 1..8, or, with kMax 16, also
// 12 and 16: a caller with kMax 16 rounds its count to one of those first (gather_block_count).
template <int kMax = kBlock, typename Body>
RSP_INLINE void with_block(int count, const Body& body) {
  switch (count) {
    case 1: return body(std::integral_constant<int, 1>());
    case 2: return body(std::integral_constant<int, 2>());
    case 3: return body(std::integral_constant<int, 3>());
    case 4: return body(std::integral_constant<int, 4>());
    case 5: return body(std::integral_constant<int, 5>());
    case 6: return body(std::integral_constant<int, 6>());
    case 7: return body(std::integral_constant<int, 7>());
  }
  if constexpr (kMax > 8) {
    if (count >= 16) return body(std::integral_constant<int, 16>());
    if (count >= 12) return body(std::integral_constant<int, 12>());
  }
  return body(std::integral_constant<int, 8>());
}

// Channels summed in registers per weight load in window_gather/scatter: 32 vector registers
// (AVX-512) hold 16 accumulators and the operands, 16 (AVX2) hold 8.
template <int BYTES>
constexpr int kGatherBlock = BYTES >= 64 ? 16 : kBlock;

// The channels of the next block when `left` remain: a count with_block<kGatherBlock> runs
// (1..8, 12, 16), the rest going to the following blocks.
template <int BYTES>
RSP_INLINE int gather_block_count(int64_t left) {
  const int count = static_cast<int>(std::min<int64_t>(kGatherBlock<BYTES>, left));
  if (kGatherBlock<BYTES> > 8 && count >= 12) return count >= 16 ? 16 : 12;
  return std::min(count, 8);
}

// One output row (n, g, i) of window_dot. b: the Band of b. pos: the (G, K*K, D) bias added to
// b per window offset, or null. smw: the softmax weights, for the backward form.
template <typename T, int BYTES, typename S>
RSP_INLINE void dot_row(const Geometry& s, const S* a, Band<T, S>& b_band, const T* pos, T fill,
                        const T* smw, T* out, int64_t ng, int64_t i, Scratch<T>& scratch) {
  using V = typename VecOf<T, BYTES>::type;
  constexpr int L = BYTES / sizeof(T);
  const int64_t HW = s.H * s.W, Wp = s.Wp(), R = s.R(), KK = s.KK();
  T* out0 = out + ng * KK * HW + i * s.W;
  const T* w0 = smw ? smw + ng * KK * HW + i * s.W : nullptr;
  const T* pos_g = pos ? pos + (ng % s.G) * KK * s.D : nullptr;
  scratch.column.resize((s.D + KK) * L);
  scratch.sums.resize(KK * L);
  T* a_col = scratch.column.data();
  T* w_col = a_col + s.D * L;
  T* sums = scratch.sums.data();
  for (int64_t j = 0; j < s.W; j += L) {
    const int n = static_cast<int>(std::min<int64_t>(L, s.W - j));
    copy_column<T, BYTES, S>(a + ng * s.D * HW + i * s.W + j, HW, s.D, n, a_col);
    std::fill(sums, sums + KK * L, T(0));
    for (int64_t ky = 0; ky < s.K; ++ky) {
      const int64_t ii = i + s.dy(ky * s.K);
      if (ii < 0 || ii >= s.H) continue;  // filled below
      const T* b_row = b_band.row(ng, ii) + R + j;
      for (int64_t kx0 = 0; kx0 < s.K; kx0 += kBlock) {
        const T* b = b_row + (kx0 - s.r()) * s.dilation;
        const int64_t o0 = ky * s.K + kx0;
        T* at = sums + o0 * L;
        with_block(static_cast<int>(std::min<int64_t>(kBlock, s.K - kx0)), [&](auto kb) {
          constexpr int KB = decltype(kb)::value;
          if (pos)
            dot_block<T, BYTES, KB, true>(a_col, b, Wp, s.D, s.dilation, pos_g + o0 * s.D, at);
          else
            dot_block<T, BYTES, KB, false>(a_col, b, Wp, s.D, s.dilation, nullptr, at);
        });
      }
    }
    if (w0) {
      // The softmax's backward over the window (Eq. 2), in place of dL/dw:
      // dlogit_o = w_o * (dw_o - sum_o' w_o' dw_o'). Off-map entries have w_o = 0.
      copy_column<T, BYTES>(w0 + j, HW, KK, n, w_col);
      V total = {};
      for (int64_t o = 0; o < KK; ++o) total += load<V>(w_col + o * L) * load<V>(sums + o * L);
      for (int64_t o = 0; o < KK; ++o)
        store(sums + o * L, load<V>(w_col + o * L) * (load<V>(sums + o * L) - total));
    }
    for (int64_t o = 0; o < KK; ++o) {
      if (n == L) {
        store(out0 + o * HW + j, load<V>(sums + o * L));
      } else {
        store<false>(out0 + o * HW + j, load<V>(sums + o * L), n);
      }
    }
  }
  for (int64_t o = 0; o < KK; ++o) {  // off-map neighbours
    const int64_t ii = i + s.dy(o), dx = s.dx(o);
    const int64_t j0 = std::max<int64_t>(0, -dx), j1 = std::min<int64_t>(s.W, s.W - dx);
    T* row = out0 + o * HW;
    if (ii < 0 || ii >= s.H || j0 >= j1) {
      std::fill(row, row + s.W, fill);
      continue;
    }
    std::fill(row, row + j0, fill);
    std::fill(row + j1, row + s.W, fill);
  }
}

// One output row (n, g, i) of window_gather (scatter = false) or window_scatter (true).
// b_band: the Band of b. w: the weights, read at (i, j) for gather; for scatter, at the
// neighbour (i - dy, j - dx), from their Band w_band.
template <typename T, int BYTES, typename S>
RSP_INLINE void gather_row(const Geometry& s, const T* w, Band<T>& w_band, Band<T, S>& b_band,
                           bool scatter, bool accumulate, T* out, int64_t ng, int64_t i,
                           Scratch<T>& scratch) {
  constexpr int L = BYTES / sizeof(T);
  const int64_t HW = s.H * s.W, Wp = s.Wp(), R = s.R(), KK = s.KK();
  const int sign = scatter ? -1 : 1;
  scratch.rows.resize(3 * KK);
  const T** w_rows = scratch.rows.data();
  const T** b_rows = w_rows + KK;
  const T** b_at = b_rows + KK;
  int64_t n_o = 0;  // the offsets whose neighbour row is on the map
  for (int64_t o = 0; o < KK; ++o) {
    const int64_t ii = i + sign * s.dy(o), dx = sign * s.dx(o);
    if (ii < 0 || ii >= s.H) continue;
    b_rows[n_o] = b_band.row(ng, ii) + R + dx;
    w_rows[n_o] = scatter ? w_band.row(ng, ii) + o * Wp + R + dx
                          : w + (ng * KK + o) * HW + i * s.W;
    ++n_o;
  }
  T* out0 = out + ng * s.D * HW + i * s.W;
  // The row's weights, [pixel block][offset][lane], read once; then one block of channels at a
  // time over the whole row, so that its neighbour rows of b stay in L1 across the blocks.
  const int64_t blocks = (s.W + L - 1) / L;
  scratch.column.resize(blocks * n_o * L);
  T* w_cols = scratch.column.data();
  for (int64_t jb = 0; jb < blocks; ++jb) {
    const int n = static_cast<int>(std::min<int64_t>(L, s.W - jb * L));
    for (int64_t o = 0; o < n_o; ++o)
      copy_column<T, BYTES>(w_rows[o] + jb * L, 0, 1, n, w_cols + (jb * n_o + o) * L);
  }
  for (int64_t d0 = 0; d0 < s.D;) {
    const int block = gather_block_count<BYTES>(s.D - d0);
    for (int64_t jb = 0; jb < blocks; ++jb) {
      const int64_t j = jb * L;
      const int n = static_cast<int>(std::min<int64_t>(L, s.W - j));
      for (int64_t o = 0; o < n_o; ++o) b_at[o] = b_rows[o] + d0 * Wp + j;
      with_block<kGatherBlock<BYTES>>(block, [&](auto kb) {
        constexpr int KB = decltype(kb)::value;
        T* o = out0 + d0 * HW + j;
        const T* w_col = w_cols + jb * n_o * L;
        if (n == L)
          gather_block<T, BYTES, KB, true>(w_col, b_at, n_o, Wp, o, HW, n, accumulate);
        else
          gather_block<T, BYTES, KB, false>(w_col, b_at, n_o, Wp, o, HW, n, accumulate);
      });
    }
    d0 += block;
  }
}

// The loops of one ISA over the rows [begin, end) of all (n, g) maps.
// S: the maps' storage type (T, or uint16_t for bfloat16 maps computed in float).
template <typename T, int BYTES, typename S>
RSP_INLINE void dot_rows(const Geometry& s, const S* a, const S* b, const T* pos, T fill,
                         const T* smw, T* out, int64_t begin, int64_t end) {
  Scratch<T> scratch;
  Band<T, S> b_band;
  b_band.reset(b, s.D, s);
  for (int64_t r = begin; r < end; ++r)
    dot_row<T, BYTES, S>(s, a, b_band, pos, fill, smw, out, r / s.H, r % s.H, scratch);
}

template <typename T, int BYTES, typename S>
RSP_INLINE void gather_rows(const Geometry& s, const T* w, const S* b, bool scatter,
                            bool accumulate, T* out, int64_t begin, int64_t end) {
  Scratch<T> scratch;
  Band<T> w_band;
  Band<T, S> b_band;
  if (scatter) w_band.reset(w, s.KK(), s);
  b_band.reset(b, s.D, s);
  for (int64_t r = begin; r < end; ++r)
    gather_row<T, BYTES, S>(s, w, w_band, b_band, scatter, accumulate, out, r / s.H, r % s.H,
                            scratch);
}

// The ISAs the loops are compiled for, widest first.
enum class Isa { kAvx512, kAvx2, kBaseline };

#if RSP_X86_DISPATCH
#define RSP_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define RSP_AVX2 __attribute__((target("avx2,fma")))
template <typename T, typename S>
RSP_AVX512 void dot_rows_avx512(const Geometry& s, const S* a, const S* b, const T* pos, T fill,
                                const T* smw, T* out, int64_t begin, int64_t end) {
  dot_rows<T, 64, S>(s, a, b, pos, fill, smw, out, begin, end);
}
template <typename T, typename S>
RSP_AVX2 void dot_rows_avx2(const Geometry& s, const S* a, const S* b, const T* pos, T fill,
                            const T* smw, T* out, int64_t begin, int64_t end) {
  dot_rows<T, 32, S>(s, a, b, pos, fill, smw, out, begin, end);
}
template <typename T, typename S>
RSP_AVX512 void gather_rows_avx512(const Geometry& s, const T* w, const S* b, bool scatter,
                                   bool acc, T* out, int64_t begin, int64_t end) {
  gather_rows<T, 64, S>(s, w, b, scatter, acc, out, begin, end);
}
template <typename T, typename S>
RSP_AVX2 void gather_rows_avx2(const Geometry& s, const T* w, const S* b, bool scatter,
                               bool acc, T* out, int64_t begin, int64_t end) {
  gather_rows<T, 32, S>(s, w, b, scatter, acc, out, begin, end);
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

// Multiply-adds below which another thread costs more than it saves: starting and joining one
// takes up to ~0.1 ms, a few million multiply-adds a fraction of a millisecond.
constexpr int64_t kMinWorkPerThread = 1 << 22;

// Runs fn(begin, end) over [0, rows) split into contiguous parts, one per intra-op thread
// (torch.get_num_threads()) that has kMinWorkPerThread of work. Built with torch's own OpenMP
// runtime (setup.py links it), on torch's thread pool (at::parallel_for): its threads spin a
// while after each of torch's parallel ops, so threads of our own would wait for the cores
// they hold. Otherwise plain threads. fn must not throw (the callers check their arguments
// before).
template <typename Fn>
void parallel_rows(int64_t rows, int64_t work_per_row, const Fn& fn) {
  if (rows <= 0) return;
#ifdef _OPENMP
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, work_per_row));
  at::parallel_for(0, rows, grain, fn);
#else
  int64_t threads = at::get_num_threads();
  threads = std::min<int64_t>(threads, rows * work_per_row / kMinWorkPerThread);
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
#endif
}

// Where parallel_rows runs its parts (collect_env, the benchmark's machine line).
std::string thread_pool() {
#ifdef _OPENMP
  return "torch's OpenMP pool";
#else
  return "threads of its own";
#endif
}

Geometry geometry(const at::Tensor& maps, int64_t kernel_size, int64_t dilation) {
  TORCH_CHECK(maps.dim() == 5, "rse_cpp: expected (N, G, D, H, W), got ", maps.sizes());
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1 && dilation >= 1,
              "rse_cpp: kernel_size must be odd and positive, dilation positive");
  return Geometry{maps.size(0), maps.size(1), maps.size(2), maps.size(3), maps.size(4),
                  kernel_size, dilation};
}

// The type the loops compute maps of `maps` in: bfloat16 in float, float and double in their own.
at::ScalarType compute_type(at::ScalarType maps) {
  return maps == at::kBFloat16 ? at::kFloat : maps;
}

void check(const at::Tensor& t, at::ScalarType type, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == type,
              "rse_cpp: ", name, " must be a contiguous CPU tensor of ", type, ", got ",
              t.scalar_type());
}

// A map the loops read: float, double, or bfloat16 (computed in float).
void check_map(const at::Tensor& t, const char* name) {
  const auto type = t.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kBFloat16,
              "rse_cpp: ", name, " must be float32, float64 or bfloat16, got ", type);
  check(t, type, name);
}

void check_weights(const at::Tensor& w, at::ScalarType type, const Geometry& s,
                   const char* name) {
  check(w, type, name);
  TORCH_CHECK(w.dim() == 5 && w.size(0) == s.N && w.size(1) == s.G && w.size(2) == s.KK() &&
                  w.size(3) == s.H && w.size(4) == s.W,
              "rse_cpp: ", name, " must be (N, G, K*K, H, W), got ", w.sizes());
}

// The bias (K*K, G, D), checked, as (G, K*K, D) for window_dot or (G, D, K*K) for gather.
at::Tensor bias_matrix(const at::Tensor& bias, at::ScalarType type, const Geometry& s,
                       bool transposed) {
  check(bias, type, "bias");
  TORCH_CHECK(bias.numel() == s.KK() * s.G * s.D, "rse_cpp: bias must be (K*K, G, D)");
  const at::Tensor b = bias.reshape({s.KK(), s.G, s.D});
  return transposed ? b.permute({1, 2, 0}) : b.permute({1, 0, 2});
}

// Calls fn(T(), S()) with the loops' type T and the maps' storage type S: bfloat16 maps, read
// as their 16 bits (uint16_t), in float; float and double maps in their own type.
template <typename Fn>
void dispatch_maps(at::ScalarType maps, const Fn& fn) {
  if (maps == at::kBFloat16) return fn(float(), uint16_t());
  AT_DISPATCH_FLOATING_TYPES(maps, "rse_cpp", [&] { fn(scalar_t(), scalar_t()); });
}

at::Tensor window_dot(const at::Tensor& a, const at::Tensor& b,
                      const std::optional<at::Tensor>& bias, int64_t kernel_size,
                      int64_t dilation, double fill,
                      const std::optional<at::Tensor>& softmax_weights, const std::string& isa) {
  const Geometry s = geometry(a, kernel_size, dilation);
  check_map(a, "a");
  check(b, a.scalar_type(), "b");
  TORCH_CHECK(a.sizes() == b.sizes(), "rse_cpp: window_dot needs a and b of one shape");
  const at::ScalarType type = compute_type(a.scalar_type());
  if (softmax_weights.has_value()) check_weights(*softmax_weights, type, s, "softmax_weights");
  const Isa which = parse_isa(isa);
  at::Tensor out = at::empty({s.N, s.G, s.KK(), s.H, s.W}, a.options().dtype(type));
  // (G, K*K, D): the loops add bias[o] to b's window offset o as they read it
  const at::Tensor pos = bias.has_value() ? bias_matrix(*bias, type, s, false).contiguous()
                                          : at::Tensor();
  dispatch_maps(a.scalar_type(), [&](auto t, auto m) {
    using T = decltype(t);
    using S = decltype(m);
    const S *ap = static_cast<const S*>(a.data_ptr()), *bb = static_cast<const S*>(b.data_ptr());
    const T* pp = pos.defined() ? pos.data_ptr<T>() : nullptr;
    const T* smw = softmax_weights.has_value() ? softmax_weights->data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    const T f = static_cast<T>(fill);
    parallel_rows(s.N * s.G * s.H, s.KK() * s.D * s.W, [&](int64_t begin, int64_t end) {
#if RSP_X86_DISPATCH
      if (which == Isa::kAvx512)
        return dot_rows_avx512<T, S>(s, ap, bb, pp, f, smw, op, begin, end);
      if (which == Isa::kAvx2)
        return dot_rows_avx2<T, S>(s, ap, bb, pp, f, smw, op, begin, end);
#endif
      dot_rows<T, 16, S>(s, ap, bb, pp, f, smw, op, begin, end);
    });
  });
  return out;
}

at::Tensor window_gather_impl(const at::Tensor& w, const at::Tensor& b,
                              const std::optional<at::Tensor>& bias, int64_t kernel_size,
                              int64_t dilation, bool scatter, const std::string& isa) {
  const Geometry s = geometry(b, kernel_size, dilation);
  check_map(b, scatter ? "a" : "b");
  const at::ScalarType type = compute_type(b.scalar_type());
  check_weights(w, type, s, "w");
  const Isa which = parse_isa(isa);
  at::Tensor out;
  if (bias.has_value()) {  // sum_o w[o] bias[o, d] for every pixel: (G, D, KK) @ (N, G, KK, HW)
    out = at::matmul(bias_matrix(*bias, type, s, true), w.reshape({s.N, s.G, s.KK(), s.H * s.W}))
              .reshape(b.sizes()).contiguous();
  } else {
    out = at::empty(b.sizes(), b.options().dtype(type));
  }
  const bool accumulate = bias.has_value();
  dispatch_maps(b.scalar_type(), [&](auto t, auto m) {
    using T = decltype(t);
    using S = decltype(m);
    const T* ww = w.data_ptr<T>();
    const S* bb = static_cast<const S*>(b.data_ptr());
    T* op = out.data_ptr<T>();
    parallel_rows(s.N * s.G * s.H, s.KK() * s.D * s.W, [&](int64_t begin, int64_t end) {
#if RSP_X86_DISPATCH
      if (which == Isa::kAvx512)
        return gather_rows_avx512<T, S>(s, ww, bb, scatter, accumulate, op, begin, end);
      if (which == Isa::kAvx2)
        return gather_rows_avx2<T, S>(s, ww, bb, scatter, accumulate, op, begin, end);
#endif
      gather_rows<T, 16, S>(s, ww, bb, scatter, accumulate, op, begin, end);
    });
  });
  return out;
}

at::Tensor window_gather(const at::Tensor& w, const at::Tensor& b,
                         const std::optional<at::Tensor>& bias, int64_t kernel_size,
                         int64_t dilation, const std::string& isa) {
  return window_gather_impl(w, b, bias, kernel_size, dilation, false, isa);
}

at::Tensor window_scatter(const at::Tensor& w, const at::Tensor& a, int64_t kernel_size,
                          int64_t dilation, const std::string& isa) {
  return window_gather_impl(w, a, std::nullopt, kernel_size, dilation, true, isa);
}

}  // namespace

#ifndef RSP_SOURCE_SHA
#define RSP_SOURCE_SHA "unknown"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The GIL is released: other Python threads (data loaders) keep running. `isa` names the
  // loops to run: "auto" (the widest this CPU has), or one of available_isas() (tests run
  // each against the reference).
  m.def("window_dot", &window_dot, "logits of Eq. 2-3 over the k x k window (and their "
        "gradient, given the softmax weights)",
        py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("kernel_size"), py::arg("dilation"),
        py::arg("fill"), py::arg("softmax_weights") = py::none(), py::arg("isa") = "auto",
        py::call_guard<py::gil_scoped_release>());
  m.def("window_gather", &window_gather, "aggregation of Eq. 1", py::arg("w"), py::arg("b"),
        py::arg("bias"), py::arg("kernel_size"), py::arg("dilation"), py::arg("isa") = "auto",
        py::call_guard<py::gil_scoped_release>());
  m.def("window_scatter", &window_scatter, "adjoint of window_gather w.r.t. the map",
        py::arg("w"), py::arg("a"), py::arg("kernel_size"), py::arg("dilation"),
        py::arg("isa") = "auto", py::call_guard<py::gil_scoped_release>());
  m.def("map_dtypes", []() { return std::vector<std::string>{"float32", "float64", "bfloat16"}; },
        "the dtypes the loops read maps in (bfloat16 widened to float32 as rows are copied)");
  m.def("thread_pool", &thread_pool, "where the loops' threads run: torch's OpenMP pool or "
        "threads of their own");
  m.def("available_isas", &available_isas, "the loops' ISAs this build and CPU run, widest first");
  m.def("best_isa", []() { return std::string(isa_name(best_isa())); },
        "the ISA isa='auto' runs");
  // setup.py compiles in a hash of this file, so Python can refuse a stale binary.
  m.attr("source_sha") = RSP_SOURCE_SHA;
}
