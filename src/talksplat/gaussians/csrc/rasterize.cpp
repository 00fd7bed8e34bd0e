// talksplat CPU Gaussian rasterizer: projection (EWA), tile binning, front-to-back compositing and
// the matching backward passes. Plain C ABI (called through ctypes), no torch headers.
//
// Numerical conventions follow gsplat: pixel centres at +0.5, a 2D blur of eps2d added to the
// projected covariance, alpha clamped to 0.99, contributions with alpha < 1/255 skipped, and a pixel
// stops once its transmittance would fall to 1e-4 or below (that last Gaussian is not composited).
//
// One deliberate difference: a Gaussian's screen extent is opacity-aware. It covers exactly the
// ellipse where opacity * exp(-sigma) >= 1/255 (plus a tiny margin) instead of a fixed 3 sigma, so a
// pixel outside the extent could never pass the alpha test anyway and a dense reference that looks at
// every pixel gives the same image.
//
// Layouts (all row-major, float32 unless noted): means[N,3], quats[N,4] (wxyz, any norm),
// scales[N,3], opacities[N], features[N,C], viewmat[4,4] (world-to-camera), K[3,3],
// means2d[N,2], conics[N,3] (a, b, c of the inverse 2D covariance [[a,b],[b,c]]), ext[N,2] (pixel
// half-extents of the alpha>=1/255 ellipse; 0 when culled), images [H,W,C].

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <omp.h>

namespace {

constexpr int TILE = 16;
constexpr int TILE_PIXELS = TILE * TILE;
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.99f;
constexpr float T_MIN = 1e-4f;
// Added to 2*ln(255*opacity) so extents and row tests are conservative under float rounding.
constexpr float EXTENT_MARGIN = 0.01f;
// gsplat clamps the Jacobian's view direction to the field of view widened by 30% on each side.
constexpr float FOV_CLAMP = 0.3f;
constexpr int N_GEOM_GRADS = 6;  // mean2d x, y, conic a, b, c, opacity

// exp(x) for x <= 0 with ~1e-7 relative error, written so that GCC vectorises loops calling it
// (Cephes-style range reduction and polynomial). Forward and backward use the same function so they
// agree exactly on which contributions pass the alpha test.
inline float exp_nonpos(float x) {
  x = std::max(x, -87.0f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Twice the largest Mahalanobis power (2*sigma) at which a Gaussian of this opacity still reaches
// alpha >= 1/255; <= 0 means it never does.
inline float power_limit(float opacity) {
  return opacity < ALPHA_MIN ? 0.0f : 2.0f * std::log(opacity / ALPHA_MIN) + EXTENT_MARGIN;
}

// Bit-level check: the kernels are compiled with -ffast-math, under which std::isfinite and NaN
// comparisons may be optimised away, but degenerate inputs (NaN/inf from a diverged optimisation)
// must still be culled rather than produce garbage tile ranges.
inline bool is_finite(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return (bits & 0x7f800000u) != 0x7f800000u;
}

struct Mat3 {
  float m[3][3];
};

inline Mat3 quat_to_rotmat(const float* q_in, float* q_unit, float* inv_norm) {
  const float n2 = q_in[0] * q_in[0] + q_in[1] * q_in[1] + q_in[2] * q_in[2] + q_in[3] * q_in[3];
  const float inv = 1.0f / std::sqrt(std::max(n2, 1e-24f));
  const float w = q_in[0] * inv, x = q_in[1] * inv, y = q_in[2] * inv, z = q_in[3] * inv;
  q_unit[0] = w, q_unit[1] = x, q_unit[2] = y, q_unit[3] = z;
  *inv_norm = inv;
  Mat3 R;
  R.m[0][0] = 1 - 2 * (y * y + z * z), R.m[0][1] = 2 * (x * y - w * z), R.m[0][2] = 2 * (x * z + w * y);
  R.m[1][0] = 2 * (x * y + w * z), R.m[1][1] = 1 - 2 * (x * x + z * z), R.m[1][2] = 2 * (y * z - w * x);
  R.m[2][0] = 2 * (x * z - w * y), R.m[2][1] = 2 * (y * z + w * x), R.m[2][2] = 1 - 2 * (x * x + y * y);
  return R;
}

struct Camera {
  float R[3][3], t[3];
  float fx, fy, cx, cy;
  float lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg;
};

Camera make_camera(const float* viewmat, const float* K, int width, int height) {
  Camera cam;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) cam.R[i][j] = viewmat[i * 4 + j];
    cam.t[i] = viewmat[i * 4 + 3];
  }
  cam.fx = K[0], cam.cx = K[2], cam.fy = K[4], cam.cy = K[5];
  const float tan_fovx = 0.5f * width / cam.fx, tan_fovy = 0.5f * height / cam.fy;
  cam.lim_x_pos = (width - cam.cx) / cam.fx + FOV_CLAMP * tan_fovx;
  cam.lim_x_neg = cam.cx / cam.fx + FOV_CLAMP * tan_fovx;
  cam.lim_y_pos = (height - cam.cy) / cam.fy + FOV_CLAMP * tan_fovy;
  cam.lim_y_neg = cam.cy / cam.fy + FOV_CLAMP * tan_fovy;
  return cam;
}

// Everything the projection of one Gaussian computes, kept for its backward pass.
struct Projected {
  float p[3];          // camera-space mean
  float q_unit[4], q_inv_norm;
  Mat3 R;              // rotation of the Gaussian
  float M[3][3];       // R * diag(s)
  float Sc[3][3];      // camera-space covariance
  float J[2][3];       // perspective Jacobian (with the clamped view direction)
  bool x_clamped, y_clamped;
  float cov2d[3];      // xx, xy, yy (including blur)
  float conic[3];
  float mean2d[2];
};

void project_one(const Camera& cam, const float* mean, const float* quat, const float* scale,
                 float eps2d, Projected& P) {
  for (int i = 0; i < 3; ++i)
    P.p[i] = cam.R[i][0] * mean[0] + cam.R[i][1] * mean[1] + cam.R[i][2] * mean[2] + cam.t[i];
  P.R = quat_to_rotmat(quat, P.q_unit, &P.q_inv_norm);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) P.M[i][j] = P.R.m[i][j] * scale[j];
  float S[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) S[i][j] = P.M[i][0] * P.M[j][0] + P.M[i][1] * P.M[j][1] + P.M[i][2] * P.M[j][2];
  float RS[3][3];  // Rv * S
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) RS[i][j] = cam.R[i][0] * S[0][j] + cam.R[i][1] * S[1][j] + cam.R[i][2] * S[2][j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      P.Sc[i][j] = RS[i][0] * cam.R[j][0] + RS[i][1] * cam.R[j][1] + RS[i][2] * cam.R[j][2];

  const float z = P.p[2], inv_z = 1.0f / z;
  const float u = P.p[0] * inv_z, v = P.p[1] * inv_z;
  const float uc = std::min(cam.lim_x_pos, std::max(-cam.lim_x_neg, u));
  const float vc = std::min(cam.lim_y_pos, std::max(-cam.lim_y_neg, v));
  P.x_clamped = uc != u;
  P.y_clamped = vc != v;
  P.J[0][0] = cam.fx * inv_z, P.J[0][1] = 0.0f, P.J[0][2] = -cam.fx * uc * inv_z;
  P.J[1][0] = 0.0f, P.J[1][1] = cam.fy * inv_z, P.J[1][2] = -cam.fy * vc * inv_z;

  float JS[2][3];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) JS[i][j] = P.J[i][0] * P.Sc[0][j] + P.J[i][1] * P.Sc[1][j] + P.J[i][2] * P.Sc[2][j];
  P.cov2d[0] = JS[0][0] * P.J[0][0] + JS[0][1] * P.J[0][1] + JS[0][2] * P.J[0][2] + eps2d;
  P.cov2d[1] = JS[0][0] * P.J[1][0] + JS[0][1] * P.J[1][1] + JS[0][2] * P.J[1][2];
  P.cov2d[2] = JS[1][0] * P.J[1][0] + JS[1][1] * P.J[1][1] + JS[1][2] * P.J[1][2] + eps2d;
  const float det = P.cov2d[0] * P.cov2d[2] - P.cov2d[1] * P.cov2d[1];
  const float inv_det = 1.0f / det;
  P.conic[0] = P.cov2d[2] * inv_det;
  P.conic[1] = -P.cov2d[1] * inv_det;
  P.conic[2] = P.cov2d[0] * inv_det;
  P.mean2d[0] = cam.fx * u + cam.cx;
  P.mean2d[1] = cam.fy * v + cam.cy;
}

// Inclusive pixel index range [lo, hi] whose centres (i + 0.5) lie within [c - e, c + e].
inline void pixel_span(float c, float e, int& lo, int& hi) {
  lo = static_cast<int>(std::ceil(c - e - 0.5f));
  hi = static_cast<int>(std::floor(c + e - 0.5f));
}

struct TileRect {
  int x0, x1, y0, y1;  // inclusive tile index ranges; empty when x0 > x1
};

inline TileRect tile_rect(const float* mean2d, const float* ext, int width, int height) {
  TileRect r{1, 0, 1, 0};
  if (ext[0] <= 0.0f) return r;
  int px0, px1, py0, py1;
  pixel_span(mean2d[0], ext[0], px0, px1);
  pixel_span(mean2d[1], ext[1], py0, py1);
  px0 = std::max(px0, 0), py0 = std::max(py0, 0);
  px1 = std::min(px1, width - 1), py1 = std::min(py1, height - 1);
  if (px0 > px1 || py0 > py1) return r;
  return TileRect{px0 / TILE, px1 / TILE, py0 / TILE, py1 / TILE};
}

// Gaussian parameters needed per tile, gathered once.
struct Splat {
  float mx, my, a, b, c, opacity, limit, ext_y;
};

inline Splat load_splat(int g, const float* means2d, const float* conics, const float* opac, const float* ext) {
  return Splat{means2d[2 * g], means2d[2 * g + 1], conics[3 * g], conics[3 * g + 1], conics[3 * g + 2],
               opac[g], power_limit(opac[g]), ext[2 * g + 1]};
}

struct TileGeom {
  int x0, y0, tw, th;
};

inline TileGeom tile_geom(int tile, int tiles_x, int width, int height) {
  const int tx = tile % tiles_x, ty = tile / tiles_x;
  const int x0 = tx * TILE, y0 = ty * TILE;
  return TileGeom{x0, y0, std::min(TILE, width - x0), std::min(TILE, height - y0)};
}

// Pixel-centre coordinates of a tile's 256 pixels, row-major (pixel p = row * 16 + column).
struct TileCoords {
  alignas(64) float px[TILE_PIXELS];
  alignas(64) float py[TILE_PIXELS];
  explicit TileCoords(const TileGeom& tg) {
    for (int p = 0; p < TILE_PIXELS; ++p) {
      px[p] = static_cast<float>(tg.x0 + p % TILE) + 0.5f;
      py[p] = static_cast<float>(tg.y0 + p / TILE) + 0.5f;
    }
  }
};

// A splat touches rows [jlo, jhi] of the tile; its work is one contiguous band of pixels
// [jlo * 16, (jhi + 1) * 16), processed by flat loops the compiler vectorises without per-row
// scalar overhead.
struct Band {
  int p0, p1;
};

inline Band splat_band(const Splat& s, const TileGeom& tg) {
  int jlo, jhi;
  pixel_span(s.my, s.ext_y, jlo, jhi);
  jlo = std::max(jlo - tg.y0, 0);
  jhi = std::min(jhi - tg.y0, tg.th - 1);
  return Band{jlo * TILE, (jhi + 1) * TILE};
}

void forward_tile(int tile, int tiles_x, int width, int height, int C, const float* means2d,
                  const float* conics, const float* opac, const float* feats, const float* ext,
                  const int32_t* tile_offsets, const int32_t* ids, float* out_acc, float* out_T,
                  int32_t* out_last, std::vector<float>& acc) {
  const TileGeom tg = tile_geom(tile, tiles_x, width, height);
  const TileCoords tc(tg);
  alignas(64) float T[TILE_PIXELS], w[TILE_PIXELS];
  alignas(64) int32_t done[TILE_PIXELS], last[TILE_PIXELS];
  std::fill(acc.begin(), acc.end(), 0.0f);
  int32_t n_done = 0;
  for (int p = 0; p < TILE_PIXELS; ++p) {
    T[p] = 1.0f;
    last[p] = 0;
    done[p] = (p % TILE) >= tg.tw || (p / TILE) >= tg.th;  // outside the image: never take part
    n_done += done[p];
  }
  const int start = tile_offsets[tile], end = tile_offsets[tile + 1];
  for (int k = start; k < end && n_done < TILE_PIXELS; ++k) {
    const int g = ids[k];
    const Splat s = load_splat(g, means2d, conics, opac, ext);
    const Band band = splat_band(s, tg);
    const int32_t count = k - start + 1;
    int32_t newly_done = 0;
    for (int p = band.p0; p < band.p1; ++p) {
      const float dx = s.mx - tc.px[p], dy = s.my - tc.py[p];
      const float sigma = 0.5f * (s.a * dx * dx + s.c * dy * dy) + s.b * dx * dy;
      const float al = std::min(ALPHA_MAX, s.opacity * exp_nonpos(-sigma));
      const bool ok = (sigma >= 0.0f) & (al >= ALPHA_MIN) & (done[p] == 0);
      const float next_T = T[p] * (1.0f - al);
      const bool finish = ok & (next_T <= T_MIN);
      const bool use = ok & !finish;
      w[p] = use ? al * T[p] : 0.0f;
      T[p] = use ? next_T : T[p];
      done[p] = finish ? 1 : done[p];
      last[p] = use ? count : last[p];
      newly_done += finish;
    }
    for (int ch = 0; ch < C; ++ch) {
      const float f = feats[static_cast<int64_t>(g) * C + ch];
      float* ac = acc.data() + ch * TILE_PIXELS;
      for (int p = band.p0; p < band.p1; ++p) ac[p] += w[p] * f;
    }
    n_done += newly_done;
  }
  for (int j = 0; j < tg.th; ++j) {
    for (int i = 0; i < tg.tw; ++i) {
      const int64_t pix = static_cast<int64_t>(tg.y0 + j) * width + tg.x0 + i;
      const int p = j * TILE + i;
      out_T[pix] = T[p];
      out_last[pix] = last[p];
      for (int ch = 0; ch < C; ++ch) out_acc[pix * C + ch] = acc[ch * TILE_PIXELS + p];
    }
  }
}

struct BackwardScratch {
  std::vector<float> v_acc, S, grad_f;
  explicit BackwardScratch(int C) : v_acc(C * TILE_PIXELS), S(C * TILE_PIXELS), grad_f(C) {}
};

void backward_tile(int tile, int tiles_x, int width, int height, int C, const float* means2d,
                   const float* conics, const float* opac, const float* feats, const float* ext,
                   const int32_t* tile_offsets, const int32_t* ids, const float* T_final,
                   const int32_t* last_in, const float* v_acc_img, const float* v_T_img,
                   float* isect_grads, BackwardScratch& sc) {
  const TileGeom tg = tile_geom(tile, tiles_x, width, height);
  const TileCoords tc(tg);
  const int stride = N_GEOM_GRADS + C;
  alignas(64) float T[TILE_PIXELS], vTT[TILE_PIXELS];
  alignas(64) int32_t last[TILE_PIXELS];
  std::fill(sc.v_acc.begin(), sc.v_acc.end(), 0.0f);
  std::fill(sc.S.begin(), sc.S.end(), 0.0f);
  int32_t max_last = 0;
  for (int p = 0; p < TILE_PIXELS; ++p) T[p] = 1.0f, vTT[p] = 0.0f, last[p] = 0;
  for (int j = 0; j < tg.th; ++j) {
    for (int i = 0; i < tg.tw; ++i) {
      const int64_t pix = static_cast<int64_t>(tg.y0 + j) * width + tg.x0 + i;
      const int p = j * TILE + i;
      T[p] = T_final[pix];
      // d(loss)/d(T_final) * T_final enters every alpha gradient of this pixel.
      vTT[p] = v_T_img[pix] * T_final[pix];
      last[p] = last_in[pix];
      max_last = std::max(max_last, last[p]);
      for (int ch = 0; ch < C; ++ch) sc.v_acc[ch * TILE_PIXELS + p] = v_acc_img[pix * C + ch];
    }
  }
  const int start = tile_offsets[tile], end = tile_offsets[tile + 1];
  // Slots of Gaussians no pixel reached stay zero.
  std::fill(isect_grads + static_cast<int64_t>(start + max_last) * stride,
            isect_grads + static_cast<int64_t>(end) * stride, 0.0f);
  alignas(64) float dxs[TILE_PIXELS], dys[TILE_PIXELS], alpha[TILE_PIXELS], gauss[TILE_PIXELS];
  alignas(64) float w[TILE_PIXELS], Ti[TILE_PIXELS], inv_one_minus[TILE_PIXELS], unclamped[TILE_PIXELS];
  alignas(64) float dot_f[TILE_PIXELS], dot_S[TILE_PIXELS];
  for (int kl = max_last - 1; kl >= 0; --kl) {
    const int k = start + kl;
    const int g = ids[k];
    const Splat s = load_splat(g, means2d, conics, opac, ext);
    const float* f = feats + static_cast<int64_t>(g) * C;
    const Band band = splat_band(s, tg);
    for (int p = band.p0; p < band.p1; ++p) {
      const float dx = s.mx - tc.px[p], dy = s.my - tc.py[p];
      const float sigma = 0.5f * (s.a * dx * dx + s.c * dy * dy) + s.b * dx * dy;
      const float gs = exp_nonpos(-sigma);
      const float al = std::min(ALPHA_MAX, s.opacity * gs);
      const bool ok = (kl < last[p]) & (sigma >= 0.0f) & (al >= ALPHA_MIN);
      const float inv = 1.0f / (1.0f - al);
      const float t_before = T[p] * inv;  // transmittance in front of this Gaussian
      dxs[p] = dx, dys[p] = dy, alpha[p] = al, gauss[p] = gs;
      unclamped[p] = (ok & (s.opacity * gs < ALPHA_MAX)) ? 1.0f : 0.0f;
      inv_one_minus[p] = ok ? inv : 0.0f;
      Ti[p] = ok ? t_before : 0.0f;
      w[p] = ok ? al * t_before : 0.0f;
      T[p] = ok ? t_before : T[p];
      dot_f[p] = 0.0f;
      dot_S[p] = 0.0f;
    }
    for (int ch = 0; ch < C; ++ch) {
      const float fc = f[ch];
      const float* va = sc.v_acc.data() + ch * TILE_PIXELS;
      float* S = sc.S.data() + ch * TILE_PIXELS;
      float gf = 0.0f;
      for (int p = band.p0; p < band.p1; ++p) {
        dot_f[p] += fc * va[p];
        dot_S[p] += S[p] * va[p];
        gf += w[p] * va[p];
        S[p] += w[p] * fc;  // S now includes this Gaussian for the ones in front of it
      }
      sc.grad_f[ch] = gf;
    }
    float g_mx = 0, g_my = 0, g_a = 0, g_b = 0, g_c = 0, g_o = 0;
    for (int p = band.p0; p < band.p1; ++p) {
      // d out / d alpha = f T_before - (S_behind + T_final-terms) / (1 - alpha)
      const float v_alpha = dot_f[p] * Ti[p] - (dot_S[p] + vTT[p]) * inv_one_minus[p];
      const float v_sigma = -v_alpha * alpha[p] * unclamped[p];
      g_o += v_alpha * gauss[p] * unclamped[p];
      const float dx = dxs[p], dy = dys[p];
      g_mx += v_sigma * (s.a * dx + s.b * dy);
      g_my += v_sigma * (s.b * dx + s.c * dy);
      g_a += 0.5f * v_sigma * dx * dx;
      g_b += v_sigma * dx * dy;
      g_c += 0.5f * v_sigma * dy * dy;
    }
    float* out = isect_grads + static_cast<int64_t>(k) * stride;
    out[0] = g_mx, out[1] = g_my, out[2] = g_a, out[3] = g_b, out[4] = g_c, out[5] = g_o;
    for (int ch = 0; ch < C; ++ch) out[N_GEOM_GRADS + ch] = sc.grad_f[ch];
  }
}

// Stable LSD radix sort of Gaussian ids by positive float depth (the bit pattern of a positive
// float orders like the float).
void sort_by_depth(std::vector<int32_t>& order, const float* depths) {
  constexpr int BITS = 11, BUCKETS = 1 << BITS;
  const size_t n = order.size();
  std::vector<int32_t> tmp(n);
  std::vector<uint32_t> keys(n), tmp_keys(n);
  for (size_t i = 0; i < n; ++i) std::memcpy(&keys[i], &depths[order[i]], sizeof(uint32_t));
  for (int shift = 0; shift < 32; shift += BITS) {
    size_t count[BUCKETS + 1] = {};
    for (size_t i = 0; i < n; ++i) ++count[((keys[i] >> shift) & (BUCKETS - 1)) + 1];
    for (int b = 0; b < BUCKETS; ++b) count[b + 1] += count[b];
    for (size_t i = 0; i < n; ++i) {
      const size_t dst = count[(keys[i] >> shift) & (BUCKETS - 1)]++;
      tmp[dst] = order[i];
      tmp_keys[dst] = keys[i];
    }
    order.swap(tmp);
    keys.swap(tmp_keys);
  }
}

}  // namespace

extern "C" {

int ts_abi_version() { return 1; }

// Projects N Gaussians. Culled Gaussians get ext = 0 and radii = 0.
void ts_project_forward(int n, const float* means, const float* quats, const float* scales,
                        const float* opac, const float* viewmat, const float* K, int width, int height,
                        float near_plane, float far_plane, float eps2d, float* means2d, float* conics,
                        float* depths, float* ext, int32_t* radii, int nthreads) {
  const Camera cam = make_camera(viewmat, K, width, height);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int g = 0; g < n; ++g) {
    Projected P;
    project_one(cam, means + 3 * g, quats + 4 * g, scales + 3 * g, eps2d, P);
    const float z = P.p[2];
    const float limit = power_limit(opac[g]);
    means2d[2 * g] = P.mean2d[0], means2d[2 * g + 1] = P.mean2d[1];
    conics[3 * g] = P.conic[0], conics[3 * g + 1] = P.conic[1], conics[3 * g + 2] = P.conic[2];
    depths[g] = z;
    float ex = 0.0f, ey = 0.0f;
    const bool finite = is_finite(z) && is_finite(P.mean2d[0]) && is_finite(P.mean2d[1]) &&
                        is_finite(P.cov2d[0]) && is_finite(P.cov2d[2]) && is_finite(P.conic[1]);
    if (finite && z > near_plane && z < far_plane && limit > 0.0f) {
      ex = std::sqrt(limit * P.cov2d[0]);
      ey = std::sqrt(limit * P.cov2d[2]);
      const float e[2] = {ex, ey};
      const TileRect r = tile_rect(P.mean2d, e, width, height);
      if (r.x0 > r.x1) ex = ey = 0.0f;
    }
    if (!(is_finite(ex) && is_finite(ey) && ex > 0.0f)) {
      ex = ey = 0.0f;
      conics[3 * g] = conics[3 * g + 1] = conics[3 * g + 2] = 0.0f;
      means2d[2 * g] = means2d[2 * g + 1] = 0.0f;
    }
    ext[2 * g] = ex, ext[2 * g + 1] = ey;
    radii[2 * g] = static_cast<int32_t>(std::ceil(ex));
    radii[2 * g + 1] = static_cast<int32_t>(std::ceil(ey));
  }
}

void ts_project_backward(int n, const float* means, const float* quats, const float* scales,
                         const float* viewmat, const float* K, int width, int height, float eps2d,
                         const float* ext, const float* v_means2d, const float* v_conics,
                         const float* v_depths, float* v_means, float* v_quats, float* v_scales,
                         int nthreads) {
  const Camera cam = make_camera(viewmat, K, width, height);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int g = 0; g < n; ++g) {
    float* vm = v_means + 3 * g;
    float* vq = v_quats + 4 * g;
    float* vs = v_scales + 3 * g;
    if (ext[2 * g] <= 0.0f) {
      vm[0] = vm[1] = vm[2] = vs[0] = vs[1] = vs[2] = 0.0f;
      vq[0] = vq[1] = vq[2] = vq[3] = 0.0f;
      continue;
    }
    Projected P;
    project_one(cam, means + 3 * g, quats + 4 * g, scales + 3 * g, eps2d, P);
    const float x = P.p[0], y = P.p[1], z = P.p[2], inv_z = 1.0f / z;
    const float* Q = P.conic;
    // Gradient w.r.t. the conic as a symmetric matrix: b sits in two entries.
    const float V[2][2] = {{v_conics[3 * g], 0.5f * v_conics[3 * g + 1]},
                           {0.5f * v_conics[3 * g + 1], v_conics[3 * g + 2]}};
    const float Qm[2][2] = {{Q[0], Q[1]}, {Q[1], Q[2]}};
    float QV[2][2], G2[2][2];  // G2 = dL/dcov2d = -Q V Q
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) QV[i][j] = Qm[i][0] * V[0][j] + Qm[i][1] * V[1][j];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) G2[i][j] = -(QV[i][0] * Qm[0][j] + QV[i][1] * Qm[1][j]);
    // dL/dJ = 2 G2 J Sc ; dL/dSc = J^T G2 J
    float JSc[2][3], vJ[2][3], G2J[2][3], vSc[3][3];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        JSc[i][j] = P.J[i][0] * P.Sc[0][j] + P.J[i][1] * P.Sc[1][j] + P.J[i][2] * P.Sc[2][j];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) {
        vJ[i][j] = 2.0f * (G2[i][0] * JSc[0][j] + G2[i][1] * JSc[1][j]);
        G2J[i][j] = G2[i][0] * P.J[0][j] + G2[i][1] * P.J[1][j];
      }
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) vSc[i][j] = P.J[0][i] * G2J[0][j] + P.J[1][i] * G2J[1][j];
    // dL/dSigma (world) = Rv^T vSc Rv
    float tmp[3][3], vS[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        tmp[i][j] = cam.R[0][i] * vSc[0][j] + cam.R[1][i] * vSc[1][j] + cam.R[2][i] * vSc[2][j];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) vS[i][j] = tmp[i][0] * cam.R[0][j] + tmp[i][1] * cam.R[1][j] + tmp[i][2] * cam.R[2][j];
    // Sigma = M M^T  =>  dL/dM = (vS + vS^T) M
    float vM[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        float acc = 0.0f;
        for (int k = 0; k < 3; ++k) acc += (vS[i][k] + vS[k][i]) * P.M[k][j];
        vM[i][j] = acc;
      }
    const float* s = scales + 3 * g;
    float vR[3][3];
    for (int j = 0; j < 3; ++j) {
      vs[j] = vM[0][j] * P.R.m[0][j] + vM[1][j] * P.R.m[1][j] + vM[2][j] * P.R.m[2][j];
      for (int i = 0; i < 3; ++i) vR[i][j] = vM[i][j] * s[j];
    }
    const float w = P.q_unit[0], qx = P.q_unit[1], qy = P.q_unit[2], qz = P.q_unit[3];
    const float gw = 2 * (-qz * vR[0][1] + qy * vR[0][2] + qz * vR[1][0] - qx * vR[1][2] - qy * vR[2][0] + qx * vR[2][1]);
    const float gx = 2 * (qy * vR[0][1] + qz * vR[0][2] + qy * vR[1][0] - 2 * qx * vR[1][1] - w * vR[1][2] +
                          qz * vR[2][0] + w * vR[2][1] - 2 * qx * vR[2][2]);
    const float gy = 2 * (-2 * qy * vR[0][0] + qx * vR[0][1] + w * vR[0][2] + qx * vR[1][0] + qz * vR[1][2] -
                          w * vR[2][0] + qz * vR[2][1] - 2 * qy * vR[2][2]);
    const float gz = 2 * (-2 * qz * vR[0][0] - w * vR[0][1] + qx * vR[0][2] + w * vR[1][0] - 2 * qz * vR[1][1] +
                          qy * vR[1][2] + qx * vR[2][0] + qy * vR[2][1]);
    // Through the normalisation q / |q|.
    const float dot = gw * w + gx * qx + gy * qy + gz * qz;
    vq[0] = (gw - dot * w) * P.q_inv_norm;
    vq[1] = (gx - dot * qx) * P.q_inv_norm;
    vq[2] = (gy - dot * qy) * P.q_inv_norm;
    vq[3] = (gz - dot * qz) * P.q_inv_norm;

    // Camera-space mean: through the 2D mean, the depth and the Jacobian.
    const float vmx = v_means2d[2 * g], vmy = v_means2d[2 * g + 1];
    float vp[3];
    vp[0] = vmx * cam.fx * inv_z;
    vp[1] = vmy * cam.fy * inv_z;
    vp[2] = -(vmx * cam.fx * x + vmy * cam.fy * y) * inv_z * inv_z + v_depths[g];
    const float inv_z2 = inv_z * inv_z;
    vp[2] += -cam.fx * inv_z2 * vJ[0][0] - cam.fy * inv_z2 * vJ[1][1];
    const float uc = -P.J[0][2] / cam.fx * z, vc = -P.J[1][2] / cam.fy * z;  // clamped x/z, y/z
    vp[2] += cam.fx * uc * inv_z2 * vJ[0][2] + cam.fy * vc * inv_z2 * vJ[1][2];
    if (!P.x_clamped) {
      vp[0] += -cam.fx * inv_z2 * vJ[0][2];
      vp[2] += cam.fx * x * inv_z2 * inv_z * vJ[0][2];
    }
    if (!P.y_clamped) {
      vp[1] += -cam.fy * inv_z2 * vJ[1][2];
      vp[2] += cam.fy * y * inv_z2 * inv_z * vJ[1][2];
    }
    for (int j = 0; j < 3; ++j) vm[j] = cam.R[0][j] * vp[0] + cam.R[1][j] * vp[1] + cam.R[2][j] * vp[2];
  }
}

// Number of tiles each Gaussian touches; returns the total number of (tile, Gaussian) pairs.
int64_t ts_count_tiles(int n, const float* means2d, const float* ext, int width, int height,
                       int32_t* counts, int nthreads) {
  // Serial on purpose: ~4 ns per Gaussian, cheaper than waking a second thread on a busy machine.
  (void)nthreads;
  int64_t total = 0;
  for (int g = 0; g < n; ++g) {
    const TileRect r = tile_rect(means2d + 2 * g, ext + 2 * g, width, height);
    const int c = r.x0 > r.x1 ? 0 : (r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1);
    counts[g] = c;
    total += c;
  }
  return total;
}

// Bins Gaussians into tiles. ids[tile_offsets[t]:tile_offsets[t+1]] lists tile t's Gaussians front
// to back (a counting sort over tiles of the depth-sorted Gaussians). For the backward reduction,
// Gaussian g's pairs sit at ids positions perm[goff[g] : goff[g] + counts[g]].
void ts_bin_tiles(int n, const float* means2d, const float* ext, const float* depths,
                  const int32_t* counts, int width, int height, int32_t* tile_offsets, int32_t* ids,
                  int32_t* perm, int64_t* goff, int nthreads) {
  const int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
  const int n_tiles = tiles_x * tiles_y;
  std::vector<int32_t> order;
  order.reserve(n);
  for (int g = 0; g < n; ++g)
    if (counts[g] > 0) order.push_back(g);
  sort_by_depth(order, depths);

  std::vector<int32_t> cursor(n_tiles + 1, 0);
  int64_t running = 0;
  for (int g = 0; g < n; ++g) {
    goff[g] = running;
    running += counts[g];
  }
  for (int32_t g : order) {
    const TileRect r = tile_rect(means2d + 2 * g, ext + 2 * g, width, height);
    for (int ty = r.y0; ty <= r.y1; ++ty)
      for (int tx = r.x0; tx <= r.x1; ++tx) ++cursor[ty * tiles_x + tx + 1];
  }
  for (int t = 0; t < n_tiles; ++t) cursor[t + 1] += cursor[t];
  std::copy(cursor.begin(), cursor.end(), tile_offsets);
  // Each thread owns a band of tile rows and scans all Gaussians front to back, so every tile's
  // list stays depth-sorted and no two threads write the same cursor.
#pragma omp parallel num_threads(nthreads)
  {
    const int n_threads = omp_get_num_threads(), me = omp_get_thread_num();
    const int row_lo = tiles_y * me / n_threads, row_hi = tiles_y * (me + 1) / n_threads - 1;
    for (int32_t g : order) {
      const TileRect r = tile_rect(means2d + 2 * g, ext + 2 * g, width, height);
      const int y_lo = std::max(r.y0, row_lo), y_hi = std::min(r.y1, row_hi);
      if (y_lo > y_hi) continue;
      int64_t e = goff[g] + static_cast<int64_t>(y_lo - r.y0) * (r.x1 - r.x0 + 1);
      for (int ty = y_lo; ty <= y_hi; ++ty)
        for (int tx = r.x0; tx <= r.x1; ++tx) {
          const int32_t k = cursor[ty * tiles_x + tx]++;
          ids[k] = g;
          perm[e++] = k;
        }
    }
  }
}

// Composites premultiplied features: out_acc[H,W,C] = sum_i f_i alpha_i T_i, out_T[H,W] = final
// transmittance, out_last[H,W] = 1 + index (within the tile's list) of the last Gaussian used.
void ts_rasterize_forward(int n, int C, const float* means2d, const float* conics, const float* opac,
                          const float* feats, const float* ext, int width, int height,
                          const int32_t* tile_offsets, const int32_t* ids, float* out_acc, float* out_T,
                          int32_t* out_last, int nthreads) {
  (void)n;
  const int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
  const int n_tiles = tiles_x * tiles_y;
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<float> acc(static_cast<size_t>(C) * TILE_PIXELS);
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < n_tiles; ++t)
      forward_tile(t, tiles_x, width, height, C, means2d, conics, opac, feats, ext, tile_offsets, ids,
                   out_acc, out_T, out_last, acc);
  }
}

// Gradients of out_acc and out_T w.r.t. means2d, conics, opacities and features. Each (tile,
// Gaussian) pair writes its own gradient slot (tiles are processed by one thread each, so no
// atomics), then each Gaussian sums its slots in a fixed order: results do not depend on the thread
// count or schedule.
void ts_rasterize_backward(int n, int C, const float* means2d, const float* conics, const float* opac,
                           const float* feats, const float* ext, int width, int height,
                           const int32_t* tile_offsets, const int32_t* ids, const int32_t* perm,
                           const int64_t* goff, const int32_t* counts, const float* T_final,
                           const int32_t* last, const float* v_acc, const float* v_T, float* v_means2d,
                           float* v_conics, float* v_opac, float* v_feats, int nthreads) {
  const int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
  const int n_tiles = tiles_x * tiles_y;
  const int stride = N_GEOM_GRADS + C;
  const int64_t n_isects = tile_offsets[n_tiles];
  // Uninitialised on purpose: every slot is written by its tile (zeros for unreached Gaussians).
  std::unique_ptr<float[]> isect_grads(new float[static_cast<size_t>(n_isects) * stride]);
#pragma omp parallel num_threads(nthreads)
  {
    BackwardScratch scratch(C);
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < n_tiles; ++t)
      backward_tile(t, tiles_x, width, height, C, means2d, conics, opac, feats, ext, tile_offsets, ids,
                    T_final, last, v_acc, v_T, isect_grads.get(), scratch);
#pragma omp for schedule(static)
    for (int g = 0; g < n; ++g) {
      float sum[N_GEOM_GRADS] = {};
      float* vf = v_feats + static_cast<int64_t>(g) * C;
      std::fill(vf, vf + C, 0.0f);
      for (int64_t e = goff[g]; e < goff[g] + counts[g]; ++e) {
        const float* src = isect_grads.get() + static_cast<int64_t>(perm[e]) * stride;
        for (int c = 0; c < N_GEOM_GRADS; ++c) sum[c] += src[c];
        for (int ch = 0; ch < C; ++ch) vf[ch] += src[N_GEOM_GRADS + ch];
      }
      v_means2d[2 * g] = sum[0], v_means2d[2 * g + 1] = sum[1];
      v_conics[3 * g] = sum[2], v_conics[3 * g + 1] = sum[3], v_conics[3 * g + 2] = sum[4];
      v_opac[g] = sum[5];
    }
  }
}

}  // extern "C"
