// Tri-plane multi-resolution hash encoding: CPU forward and backward (plain C ABI, float32).
//
// Reproduces talksplat/fields/_hashgrid_reference.py; read that file for the conventions
// (normalisation and clamping, plane order, cell choice at the border, dense vs hashed indexing).
//
// Layout: x [N, 3]; embeddings [3, S, F] (plane, row, feature), level l of every plane occupying rows
// offsets[l] .. offsets[l] + table_sizes[l]; output / grad_out [N, C] with C = 3 * L * F and channel
// (plane * L + level) * F + feature.
//
// Parallel strategy
//   forward, input gradient: points are split into blocks handed out dynamically; a thread sweeps
//     every (plane, level) table over its block. Inside a block, data is kept axis-major /
//     channel-major ([3][B], [C][B]) so each table's point loop reads and writes contiguously and
//     GCC turns it into SIMD gathers; rows are transposed to/from the [N, C] tensors once per block.
//   embedding gradient: each thread *owns* a fixed set of (plane, level) tables (tables never
//     overlap) and scatter-adds every point's contribution into them: no atomics, no per-thread
//     copies of the tables, and no barrier until the end. Measured on 50k points, defaults,
//     2 threads: 2.9 ms, vs 3.5 ms for per-thread full-size buffers + reduction, and 3.2 ms for a
//     variant keeping threads in lock-step (a barrier per point block, to share grad_out rows in
//     cache), which became ~100 ms whenever another process competed for the cores, because every
//     barrier then waits for a descheduled thread.

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

namespace {

constexpr int kNumAxes = 3;
constexpr int kNumPlanes = 3;
constexpr int kPlaneAxes[kNumPlanes][2] = {{0, 1}, {1, 2}, {0, 2}};  // xy, yz, xz
constexpr uint32_t kHashPrimeB = 2654435761u;  // instant-ngp; the prime for the first axis is 1
constexpr int kCorners = 4;
// Points per block in the point-parallel passes, between these bounds. A larger block lets more
// points reuse a table's cached rows before the sweep moves on to the next table: with ER-NeRF's
// 5 MB of hashed tables the forward was 2x faster at 8192 points than at 256 (defaults, whose
// tables fit in L2, barely care). Blocks are shrunk so each thread still gets several of them.
constexpr int64_t kMinPointBlock = 256;
constexpr int64_t kMaxPointBlock = 8192;
constexpr int64_t kBlocksPerThread = 4;  // enough for the dynamic schedule to even out the work
// Points per block in the table-owned embedding backward: the block's grad_out rows
// (block x C x 4 B = 288 KB for defaults) stay in L2 while the thread sweeps its tables over them.
constexpr int64_t kBackwardBlock = 2048;
constexpr int kOk = 0;

}  // namespace

extern "C" {

// Mirrors hashgrid.py's _NativeLayout (ctypes.Structure); keep the field order in sync.
struct HashGridLayout {
  int32_t num_levels;
  int32_t features;           // F
  int64_t entries_per_plane;  // S
  float bound;
  const int32_t* resolutions;  // [L] cells per side
  const int64_t* offsets;      // [L] first row of each level within a plane
  const int32_t* table_sizes;  // [L] rows; hashed levels are powers of two; rows * F < 2^31
  const int32_t* hashed;       // [L] 1 = spatial hash, 0 = dense
};

}  // extern "C"

namespace {

// One (plane, level) table.
struct TableView {
  int axis_a, axis_b;
  int32_t resolution;
  int32_t row_stride;  // dense: rows per grid line (R + 1)
  uint32_t hash_mask;  // hashed: table_size - 1
  bool hashed;
  int64_t rows;
  int64_t first_row;  // plane * S + level offset
  int64_t channel;    // first output channel
};

int num_tables(const HashGridLayout& layout) { return kNumPlanes * layout.num_levels; }

int64_t num_channels(const HashGridLayout& layout) {
  return static_cast<int64_t>(num_tables(layout)) * layout.features;
}

TableView table_view(const HashGridLayout& layout, int table) {
  const int plane = table / layout.num_levels;
  const int level = table % layout.num_levels;
  TableView view;
  view.axis_a = kPlaneAxes[plane][0];
  view.axis_b = kPlaneAxes[plane][1];
  view.resolution = layout.resolutions[level];
  view.row_stride = view.resolution + 1;
  view.hash_mask = static_cast<uint32_t>(layout.table_sizes[level]) - 1;
  view.hashed = layout.hashed[level] != 0;
  view.rows = layout.table_sizes[level];
  view.first_row = plane * layout.entries_per_plane + layout.offsets[level];
  view.channel = static_cast<int64_t>(table) * layout.features;
  return view;
}

// Signed 32-bit rows let the compiler use 16-lane dword gathers instead of 8-lane qword ones.
template <bool Hashed>
inline int32_t vertex_row(int32_t ia, int32_t ib, const TableView& t) {
  if constexpr (Hashed) {
    return static_cast<int32_t>((static_cast<uint32_t>(ia) ^ (static_cast<uint32_t>(ib) * kHashPrimeB)) &
                                t.hash_mask);
  } else {
    return ia + ib * t.row_stride;
  }
}

// The four rows and the fractional position of one point in one table.
struct Cell {
  int32_t row[kCorners];  // (0,0), (1,0), (0,1), (1,1)
  float frac_a, frac_b;
};

template <bool Hashed>
inline Cell locate(float u_a, float u_b, const TableView& t) {
  const float res = static_cast<float>(t.resolution);
  const float pos_a = u_a * res;
  const float pos_b = u_b * res;
  // pos >= 0, so truncation is floor; u == 1 falls into the last cell with fraction 1. The lower
  // clamp only matters for NaN inputs (converted to INT_MIN): it keeps every read in bounds.
  const int32_t ia = std::clamp(static_cast<int32_t>(pos_a), 0, t.resolution - 1);
  const int32_t ib = std::clamp(static_cast<int32_t>(pos_b), 0, t.resolution - 1);
  Cell c;
  c.frac_a = pos_a - static_cast<float>(ia);
  c.frac_b = pos_b - static_cast<float>(ib);
  c.row[0] = vertex_row<Hashed>(ia, ib, t);
  c.row[1] = vertex_row<Hashed>(ia + 1, ib, t);
  c.row[2] = vertex_row<Hashed>(ia, ib + 1, t);
  c.row[3] = vertex_row<Hashed>(ia + 1, ib + 1, t);
  return c;
}

// Clamped normalised coordinates of `count` points, axis-major: u[axis * stride + i]. Optionally
// also d(u)/d(x), zero where the coordinate was clamped (a point on the bound keeps it, like clamp).
void normalize_points(const float* __restrict x, int64_t count, float bound, int64_t stride,
                      float* __restrict u, float* __restrict du_dx) {
  const float inv_span = 0.5f / bound;
  for (int axis = 0; axis < kNumAxes; ++axis) {
    for (int64_t i = 0; i < count; ++i) {
      const float raw = (x[kNumAxes * i + axis] + bound) * inv_span;
      u[axis * stride + i] = std::clamp(raw, 0.0f, 1.0f);
      if (du_dx) du_dx[axis * stride + i] = (raw >= 0.0f && raw <= 1.0f) ? inv_span : 0.0f;
    }
  }
}

// kF > 0 fixes the feature count at compile time; kF == 0 reads it at run time.
template <int kF>
inline int feature_count(int runtime_f) {
  return kF > 0 ? kF : runtime_f;
}

// cols[f * block + i] = feature f of point i in this table.
template <bool Hashed, int kF>
void forward_table(const float* __restrict u_a, const float* __restrict u_b, int64_t count,
                   int64_t block, const float* __restrict table, const TableView& t, int runtime_f,
                   float* __restrict cols) {
  const int F = feature_count<kF>(runtime_f);
  for (int64_t i = 0; i < count; ++i) {
    const Cell c = locate<Hashed>(u_a[i], u_b[i], t);
    const float wa1 = c.frac_a, wa0 = 1.0f - c.frac_a;
    const float wb1 = c.frac_b, wb0 = 1.0f - c.frac_b;
    for (int f = 0; f < F; ++f) {
      cols[f * block + i] = wb0 * (wa0 * table[c.row[0] * F + f] + wa1 * table[c.row[1] * F + f]) +
                                  wb1 * (wa0 * table[c.row[2] * F + f] + wa1 * table[c.row[3] * F + f]);
    }
  }
}

// Accumulates d(loss)/d(u) of a block; grad_cols holds this table's grad_out, channel-major.
template <bool Hashed, int kF>
void backward_table_inputs(const float* __restrict u_a, const float* __restrict u_b, int64_t count,
                           int64_t block, const float* __restrict table, const float* __restrict grad_cols,
                           const TableView& t, int runtime_f, float* __restrict grad_u_a,
                           float* __restrict grad_u_b) {
  const int F = feature_count<kF>(runtime_f);
  const float res = static_cast<float>(t.resolution);
  for (int64_t i = 0; i < count; ++i) {
    const Cell c = locate<Hashed>(u_a[i], u_b[i], t);
    float d_frac_a = 0.0f, d_frac_b = 0.0f;
    for (int f = 0; f < F; ++f) {
      const float g = grad_cols[f * block + i];
      const float e00 = table[c.row[0] * F + f], e10 = table[c.row[1] * F + f];
      const float e01 = table[c.row[2] * F + f], e11 = table[c.row[3] * F + f];
      d_frac_a += g * ((1.0f - c.frac_b) * (e10 - e00) + c.frac_b * (e11 - e01));
      d_frac_b += g * ((1.0f - c.frac_a) * (e01 - e00) + c.frac_a * (e11 - e10));
    }
    grad_u_a[i] += d_frac_a * res;  // pos = u * R
    grad_u_b[i] += d_frac_b * res;
  }
}

// Rows and bilinear weights of a block of points, corner-major, computed in a vectorisable loop
// so that only the conflicting scatter-adds remain scalar.
struct CornerScratch {
  std::vector<int32_t> rows;
  std::vector<float> weights;
  explicit CornerScratch(int64_t block) : rows(kCorners * block), weights(kCorners * block) {}
};

template <bool Hashed>
void locate_block(const float* __restrict u_a, const float* __restrict u_b, int64_t count,
                  const TableView& t, int32_t* __restrict rows, float* __restrict weights,
                  int64_t stride) {
  for (int64_t i = 0; i < count; ++i) {
    const Cell c = locate<Hashed>(u_a[i], u_b[i], t);
    const float wa1 = c.frac_a, wa0 = 1.0f - c.frac_a;
    const float wb1 = c.frac_b, wb0 = 1.0f - c.frac_b;
    for (int k = 0; k < kCorners; ++k) rows[k * stride + i] = c.row[k];
    weights[0 * stride + i] = wa0 * wb0;
    weights[1 * stride + i] = wa1 * wb0;
    weights[2 * stride + i] = wa0 * wb1;
    weights[3 * stride + i] = wa1 * wb1;
  }
}

template <bool Hashed, int kF>
void backward_table_embeddings(const float* u_a, const float* u_b, int64_t count,
                               const float* __restrict grad_out, int64_t out_stride,
                               const TableView& t, int runtime_f, CornerScratch& scratch,
                               float* __restrict table_grad) {
  const int F = feature_count<kF>(runtime_f);
  int32_t* rows = scratch.rows.data();
  float* weights = scratch.weights.data();
  locate_block<Hashed>(u_a, u_b, count, t, rows, weights, kBackwardBlock);
  const float* g = grad_out + t.channel;
  for (int64_t i = 0; i < count; ++i, g += out_stride) {
    for (int k = 0; k < kCorners; ++k) {
      float* dst = table_grad + rows[k * kBackwardBlock + i] * F;
      const float w = weights[k * kBackwardBlock + i];
      for (int f = 0; f < F; ++f) dst[f] += w * g[f];
    }
  }
}

// Calls fn(hashed_tag, features_tag) with compile-time constants for the common feature counts.
template <bool Hashed, class Fn>
void dispatch_features(int features, Fn&& fn) {
  using H = std::integral_constant<bool, Hashed>;
  switch (features) {
    case 1: fn(H{}, std::integral_constant<int, 1>{}); break;
    case 2: fn(H{}, std::integral_constant<int, 2>{}); break;
    case 4: fn(H{}, std::integral_constant<int, 4>{}); break;
    default: fn(H{}, std::integral_constant<int, 0>{}); break;
  }
}

template <class Fn>
void dispatch(const TableView& t, int features, Fn&& fn) {
  if (t.hashed) {
    dispatch_features<true>(features, fn);
  } else {
    dispatch_features<false>(features, fn);
  }
}

int64_t block_count(int64_t n, int64_t block) { return (n + block - 1) / block; }

int64_t point_block(int64_t n, int threads) {
  const int64_t even_share = block_count(n, static_cast<int64_t>(threads) * kBlocksPerThread);
  const int64_t rounded = block_count(even_share, kMinPointBlock) * kMinPointBlock;
  return std::clamp(rounded, kMinPointBlock, kMaxPointBlock);
}

int valid_threads(int32_t requested) { return std::max<int32_t>(1, requested); }

// Block-local, channel-major [C][block] <-> row-major [count, C] copies.
void columns_to_rows(const float* __restrict cols, int64_t count, int64_t block, int64_t channels,
                     float* __restrict rows) {
  for (int64_t i = 0; i < count; ++i)
    for (int64_t ch = 0; ch < channels; ++ch) rows[i * channels + ch] = cols[ch * block + i];
}

void rows_to_columns(const float* __restrict rows, int64_t count, int64_t block, int64_t channels,
                     float* __restrict cols) {
  for (int64_t ch = 0; ch < channels; ++ch)
    for (int64_t i = 0; i < count; ++i) cols[ch * block + i] = rows[i * channels + ch];
}

// Uninitialised scratch: every element is written before it is read, so skip vector's zeroing.
std::unique_ptr<float[]> scratch_floats(int64_t count) { return std::unique_ptr<float[]>(new float[count]); }

}  // namespace

extern "C" {

// out[N, C] = encoding of x[N, 3].
int hashgrid_forward(const float* x, int64_t n, const float* emb, const HashGridLayout* layout,
                     float* out, int32_t threads) {
  const HashGridLayout& lay = *layout;
  const int64_t channels = num_channels(lay);
  const int64_t block = point_block(n, valid_threads(threads));
#pragma omp parallel num_threads(valid_threads(threads))
  {
    const auto u = scratch_floats(kNumAxes * block);
    const auto cols = scratch_floats(channels * block);
#pragma omp for schedule(dynamic)  // a descheduled thread must not hold back a fixed share
    for (int64_t b = 0; b < block_count(n, block); ++b) {
      const int64_t start = b * block;
      const int64_t count = std::min(block, n - start);
      normalize_points(x + kNumAxes * start, count, lay.bound, block, u.get(), nullptr);
      for (int table = 0; table < num_tables(lay); ++table) {
        const TableView t = table_view(lay, table);
        dispatch(t, lay.features, [&](auto hashed, auto feats) {
          forward_table<decltype(hashed)::value, decltype(feats)::value>(
              &u[t.axis_a * block], &u[t.axis_b * block], count, block,
              emb + t.first_row * lay.features, t, lay.features, &cols[t.channel * block]);
        });
      }
      columns_to_rows(cols.get(), count, block, channels, out + start * channels);
    }
  }
  return kOk;
}

// grad_emb[3, S, F] = d(loss)/d(embeddings). Fully overwritten: the level tables tile each plane
// and every table is zeroed by its owner, so the caller need not zero it.
int hashgrid_backward_embeddings(const float* x, int64_t n, const float* grad_out,
                                 const HashGridLayout* layout, float* grad_emb, int32_t threads) {
  const HashGridLayout& lay = *layout;
  const int tables = num_tables(lay);
  const int64_t channels = num_channels(lay);
#pragma omp parallel num_threads(valid_threads(threads))
  {
    // Round-robin ownership: fine levels cost more (cache misses), and dealing tables out in
    // level order gives every thread a similar mix of coarse and fine ones.
    const int first = omp_get_thread_num(), step = omp_get_num_threads();
    if (first < tables) {
      CornerScratch scratch(kBackwardBlock);
      std::vector<float> u(kNumAxes * kBackwardBlock);
      for (int table = first; table < tables; table += step) {
        const TableView t = table_view(lay, table);
        std::memset(grad_emb + t.first_row * lay.features, 0, sizeof(float) * t.rows * lay.features);
      }
      for (int64_t start = 0; start < n; start += kBackwardBlock) {
        const int64_t count = std::min(kBackwardBlock, n - start);
        normalize_points(x + kNumAxes * start, count, lay.bound, kBackwardBlock, u.data(), nullptr);
        for (int table = first; table < tables; table += step) {
          const TableView t = table_view(lay, table);
          dispatch(t, lay.features, [&](auto hashed, auto feats) {
            backward_table_embeddings<decltype(hashed)::value, decltype(feats)::value>(
                &u[t.axis_a * kBackwardBlock], &u[t.axis_b * kBackwardBlock], count,
                grad_out + start * channels, channels, t, lay.features, scratch,
                grad_emb + t.first_row * lay.features);
          });
        }
      }
    }
  }
  return kOk;
}

// grad_x[N, 3] = d(loss)/d(x) (zero for coordinates clamped to the border).
int hashgrid_backward_inputs(const float* x, int64_t n, const float* emb, const float* grad_out,
                             const HashGridLayout* layout, float* grad_x, int32_t threads) {
  const HashGridLayout& lay = *layout;
  const int64_t channels = num_channels(lay);
  const int64_t block = point_block(n, valid_threads(threads));
#pragma omp parallel num_threads(valid_threads(threads))
  {
    const auto u = scratch_floats(kNumAxes * block), du_dx = scratch_floats(kNumAxes * block);
    const auto grad_u = scratch_floats(kNumAxes * block);
    const auto grad_cols = scratch_floats(channels * block);
#pragma omp for schedule(dynamic)  // a descheduled thread must not hold back a fixed share
    for (int64_t b = 0; b < block_count(n, block); ++b) {
      const int64_t start = b * block;
      const int64_t count = std::min(block, n - start);
      normalize_points(x + kNumAxes * start, count, lay.bound, block, u.get(), du_dx.get());
      rows_to_columns(grad_out + start * channels, count, block, channels, grad_cols.get());
      std::fill(grad_u.get(), grad_u.get() + kNumAxes * block, 0.0f);
      for (int table = 0; table < num_tables(lay); ++table) {
        const TableView t = table_view(lay, table);
        dispatch(t, lay.features, [&](auto hashed, auto feats) {
          backward_table_inputs<decltype(hashed)::value, decltype(feats)::value>(
              &u[t.axis_a * block], &u[t.axis_b * block], count, block,
              emb + t.first_row * lay.features, &grad_cols[t.channel * block], t, lay.features,
              &grad_u[t.axis_a * block], &grad_u[t.axis_b * block]);
        });
      }
      for (int axis = 0; axis < kNumAxes; ++axis)
        for (int64_t i = 0; i < count; ++i)
          grad_x[kNumAxes * (start + i) + axis] = grad_u[axis * block + i] * du_dx[axis * block + i];
    }
  }
  return kOk;
}

}  // extern "C"
