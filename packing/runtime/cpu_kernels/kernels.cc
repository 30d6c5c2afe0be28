// packed-bert-serve's CPU kernels for ONNX Runtime: the float32 work around the int8 Linear
// layers, fused into one pass over each row (domain "packed_bert", opset 1).
//
//   RowQuantize(x[..., K]) -> q uint8 [..., K], scale [..., 1]
//   DequantBias(acc[..., N], scale[..., 1], bias[N]) -> acc * scale + bias
//   DequantBiasGeluQuantize(acc, scale, bias) -> RowQuantize(gelu(acc * scale + bias))
//   DequantBiasResidualLayerNormQuantize(acc, scale, bias, residual, gamma, beta)
//       -> y = LayerNorm(residual + (acc * scale + bias)), RowQuantize(y)
//   PackedAttention(qkv[..., T, 3H], position_ids int64 [T], bias[3H] optional)
//       -> context [..., T, H]: multi-head attention of each sequence over its own tokens
//       (attribute num_heads), of qkv + bias when the bias is given
//   BiasGelu(x[..., N], bias[N]) -> gelu(x + bias)                       (float32 graphs)
//   BiasResidualLayerNorm(x[..., N], bias[N], residual, gamma, beta)
//       -> LayerNorm(residual + (x + bias))                               (float32 graphs)
//
// RowQuantize is the graphs' per-token int8 quantization: scale = max(max|x| / 127,
// min_scale), q = saturate(round_half_even(x / scale) + 128). Every output row depends on
// its own input row only, and each row is computed the same way whatever the number of rows
// and whichever thread takes it: a request's numbers do not depend on its neighbours.
//
// ONNX Runtime's C API is reached through the OrtApi table ONNX Runtime hands to
// RegisterCustomOps. The table is append-only (each release adds entries at its end), so
// an entry's position never changes; the positions used here are listed in `Slot`, and
// registration checks the table by calling GetBuildInfoString before anything else.
// The custom op record (`CustomOp`) is ONNX Runtime's OrtCustomOp of version 16.
//
// PackedAttention reads the unpack/repack layout's tokens as they lie, sequences end to end:
// a sequence is a run of consecutive position ids (a new one starts wherever position_ids[t]
// is not position_ids[t - 1] + 1). Each (sequence, head) is one unit of work computed whole by
// one thread, so a sequence's context is the same bits alone or among others, on any number
// of threads, and no work is spent on pairs of tokens of different sequences.
//
// Built on the host that runs it (packing/runtime/cpu_kernels/__init__.py: g++ -O3
// -march=native), so the loops are vectorised for that CPU. No floating-point contraction
// (-ffp-contract=off) in the row kernels: acc * scale + bias rounds twice, as the graph's Mul
// and Add nodes do. The attention section turns contraction on (its products have no plain
// graph to match bit for bit, only a tolerance).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

extern "C" {
struct OrtStatus;
struct OrtApi;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtCustomOpDomain;
struct OrtSessionOptions;
struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};
}

namespace {

// Positions of the OrtApi entries used here (0-based; see the header comment).
enum Slot : int {
  CreateStatus = 0,
  CreateCustomOpDomain = 26,
  CustomOpDomain_Add = 27,
  AddCustomOpDomain = 28,
  GetTensorMutableData = 51,
  GetDimensionsCount = 61,
  GetDimensions = 62,
  GetTensorTypeAndShape = 65,
  KernelInfoGetAttribute_float = 85,
  KernelInfoGetAttribute_int64 = 86,
  KernelContext_GetInputCount = 88,
  KernelContext_GetInput = 90,
  KernelContext_GetOutput = 91,
  ReleaseStatus = 93,
  ReleaseTensorTypeAndShapeInfo = 99,
  GetBuildInfoString = 254,
  KernelContext_ParallelFor = 274,
};
constexpr uint32_t kApiVersion = 18;  // ONNX Runtime 1.18, the oldest the package accepts
constexpr int kFail = 1;              // OrtErrorCode ORT_FAIL
constexpr int kFloat = 1, kUint8 = 2, kInt64 = 7;  // ONNXTensorElementDataType

const OrtApi* g_api = nullptr;

template <class F>
F api_fn(Slot s) {
  return reinterpret_cast<F>(reinterpret_cast<void* const*>(g_api)[s]);
}

OrtStatus* make_status(const std::string& msg) {
  return api_fn<OrtStatus* (*)(int, const char*)>(CreateStatus)(kFail, msg.c_str());
}

#define RETURN_IF(expr)            \
  do {                             \
    OrtStatus* _st = (expr);       \
    if (_st != nullptr) return _st; \
  } while (0)

// ---------------------------------------------------------------- tensors of a kernel call
struct Tensor {
  void* data = nullptr;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

OrtStatus* shape_of(const OrtValue* v, std::vector<int64_t>* out) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF(api_fn<OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**)>(
      GetTensorTypeAndShape)(v, &info));
  size_t n = 0;
  OrtStatus* st = api_fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(
      GetDimensionsCount)(info, &n);
  if (st == nullptr) {
    out->assign(n, 0);
    st = api_fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(
        GetDimensions)(info, out->data(), n);
  }
  api_fn<void (*)(OrtTensorTypeAndShapeInfo*)>(ReleaseTensorTypeAndShapeInfo)(info);
  return st;
}

// Input i of the call (null when the node leaves it out)
OrtStatus* input_value(OrtKernelContext* ctx, size_t i, const OrtValue** v) {
  *v = nullptr;
  return api_fn<OrtStatus* (*)(const OrtKernelContext*, size_t, const OrtValue**)>(
      KernelContext_GetInput)(ctx, i, v);
}

// The shape and data of an input value
OrtStatus* tensor_of(const OrtValue* v, Tensor* t) {
  RETURN_IF(shape_of(v, &t->shape));
  return api_fn<OrtStatus* (*)(OrtValue*, void**)>(GetTensorMutableData)(
      const_cast<OrtValue*>(v), &t->data);
}

OrtStatus* input(OrtKernelContext* ctx, size_t i, Tensor* t) {
  const OrtValue* v = nullptr;
  RETURN_IF(input_value(ctx, i, &v));
  if (v == nullptr) return make_status("packed_bert kernel: input " + std::to_string(i) + " missing");
  return tensor_of(v, t);
}

// An optional input: *given false (and t untouched) when the node leaves it out
OrtStatus* optional_input(OrtKernelContext* ctx, size_t i, Tensor* t, bool* given) {
  size_t n = 0;
  RETURN_IF(api_fn<OrtStatus* (*)(const OrtKernelContext*, size_t*)>(KernelContext_GetInputCount)(
      ctx, &n));
  const OrtValue* v = nullptr;
  if (i < n) RETURN_IF(input_value(ctx, i, &v));
  *given = v != nullptr;
  return *given ? tensor_of(v, t) : nullptr;
}

OrtStatus* output(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& shape, Tensor* t) {
  OrtValue* v = nullptr;
  RETURN_IF(api_fn<OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**)>(
      KernelContext_GetOutput)(ctx, i, shape.data(), shape.size(), &v));
  t->shape = shape;
  return api_fn<OrtStatus* (*)(OrtValue*, void**)>(GetTensorMutableData)(v, &t->data);
}

std::vector<int64_t> with_last(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

// Rows [0, rows) in blocks on the session's intra-op threads.
struct RowJob {
  int64_t rows = 0, block = 0;
  void (*body)(const void* self, int64_t r0, int64_t r1) = nullptr;
  const void* self = nullptr;
};

void run_block(void* p, size_t i) {
  auto* job = static_cast<RowJob*>(p);
  int64_t r0 = static_cast<int64_t>(i) * job->block;
  job->body(job->self, r0, std::min(job->rows, r0 + job->block));
}

// fn(data, i) for i in [0, n) on the session's intra-op threads
OrtStatus* parallel_for(OrtKernelContext* ctx, void (*fn)(void*, size_t), size_t n, void* data) {
  return api_fn<OrtStatus* (*)(const OrtKernelContext*, void (*)(void*, size_t), size_t, size_t,
                               void*)>(KernelContext_ParallelFor)(ctx, fn, n, 0, data);
}

OrtStatus* parallel_rows(OrtKernelContext* ctx, RowJob job) {
  if (job.rows <= 0) return nullptr;
  job.block = std::max<int64_t>(1, std::min<int64_t>(16, job.rows / 8));
  size_t blocks = static_cast<size_t>((job.rows + job.block - 1) / job.block);
  return parallel_for(ctx, run_block, blocks, &job);
}

// ------------------------------------------------------------------------- row arithmetic
constexpr float kQmax = 127.0f;
constexpr float kZeroPoint = 128.0f;

// q = saturate(round_half_even(x / scale) + 128) with scale = max(hi / 127, min_scale), hi
// the row's max |x| (computed by the caller)
inline float quantize_scaled(const float* x, int64_t k, float hi, float min_scale, uint8_t* q) {
  float scale = std::max(hi / kQmax, min_scale);
#pragma omp simd
  for (int64_t j = 0; j < k; ++j) {
    float v = std::rint(x[j] / scale) + kZeroPoint;
    v = std::min(std::max(v, 0.0f), 255.0f);
    q[j] = static_cast<uint8_t>(static_cast<int32_t>(v));
  }
  return scale;
}

// quantize_scaled with the row's max |x| found here
inline float quantize_row(const float* x, int64_t k, float min_scale, uint8_t* q) {
  float hi = 0.0f;
#pragma omp simd reduction(max : hi)
  for (int64_t j = 0; j < k; ++j) hi = std::max(hi, std::fabs(x[j]));
  return quantize_scaled(x, k, hi, min_scale, q);
}

inline void dequant_bias_row(const float* acc, float s, const float* bias, int64_t n, float* y) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float t = acc[j] * s;
    y[j] = t + bias[j];
  }
}

// erf(x) = x * P(x^2) / Q(x^2) for |x| <= 4, clamped outside (float32 erf is 1 there): a
// rational least-squares fit made for this file, max abs error 4.2e-7 evaluated in float32
// (tests/unit/test_cpu_kernels.py checks it against math.erf). glibc's vector erff took 3x
// as long per element.
inline float erf_rational(float x) {
  x = std::min(std::max(x, -4.0f), 4.0f);
  const float z = x * x;
  float p = 2.0381954117e-08f;
  p = std::fma(p, z, -1.9346583908e-06f);
  p = std::fma(p, z, 1.3207338138e-04f);
  p = std::fma(p, z, 3.2676398109e-03f);
  p = std::fma(p, z, 4.9163212792e-02f);
  p = std::fma(p, z, 1.8958784440e-01f);
  p = std::fma(p, z, 1.1283791460e+00f);
  float q = 8.5333659835e-04f;
  q = std::fma(q, z, 1.3457022102e-02f);
  q = std::fma(q, z, 1.1069100590e-01f);
  q = std::fma(q, z, 5.0135046309e-01f);
  q = std::fma(q, z, 1.0f);
  return std::min(std::max(x * p / q, -1.0f), 1.0f);
}

// y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and variance over the row
inline void layer_norm_row(float* x, int64_t n, const float* gamma, const float* beta, float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += x[j];
  const float mean = sum / static_cast<float>(n);
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) {
    float d = x[j] - mean;
    sq += d * d;
  }
  const float inv = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] = (x[j] - mean) * inv * gamma[j] + beta[j];
}

// --------------------------------------------------------------------------------- kernels
struct Attrs {
  float min_scale = 1e-12f;
  float epsilon = 1e-12f;
  int64_t num_heads = 0;  // PackedAttention
  float scale = 0.0f;     // PackedAttention; 0: 1 / sqrt(head size)
};

struct Call {  // one kernel call: tensors by position, attributes, row geometry
  const Attrs* attrs;
  Tensor in[6], out[3];
  int64_t rows = 0, width = 0;  // width: elements per row of the first input
};

void row_quantize_body(const void* p, int64_t r0, int64_t r1) {
  auto* c = static_cast<const Call*>(p);
  const float* x = static_cast<const float*>(c->in[0].data);
  auto* q = static_cast<uint8_t*>(c->out[0].data);
  auto* s = static_cast<float*>(c->out[1].data);
  for (int64_t r = r0; r < r1; ++r)
    s[r] = quantize_row(x + r * c->width, c->width, c->attrs->min_scale, q + r * c->width);
}

void dequant_bias_body(const void* p, int64_t r0, int64_t r1) {
  auto* c = static_cast<const Call*>(p);
  const float* acc = static_cast<const float*>(c->in[0].data);
  const float* s = static_cast<const float*>(c->in[1].data);
  const float* b = static_cast<const float*>(c->in[2].data);
  auto* y = static_cast<float*>(c->out[0].data);
  for (int64_t r = r0; r < r1; ++r)
    dequant_bias_row(acc + r * c->width, s[r], b, c->width, y + r * c->width);
}

// GELU's loop at the CPU's full vector width: GCC's tuning for AVX-512 CPUs vectorises with
// 256-bit registers unless told otherwise, and erf's polynomial makes this loop many
// instructions per element. Each element's arithmetic is the same at any width. GCC 8
// and later on x86 only (other compilers may not take this target attribute: they build the
// loop at their default width).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define FULL_WIDTH __attribute__((target("prefer-vector-width=512")))
#else
#define FULL_WIDTH
#endif

// g[j] = gelu(a[j] * s + b[j]) (exact, erf) for j < n; returns the largest |g[j]|. s = 1
// leaves a[j] as it is (a product by 1 is exact).
FULL_WIDTH inline float gelu_row(const float* a, float s, const float* b, int64_t n, float* g) {
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  float hi = 0.0f;
#pragma omp simd reduction(max : hi)
  for (int64_t j = 0; j < n; ++j) {
    float t = a[j] * s;
    t = t + b[j];
    float v = 0.5f * t * (1.0f + erf_rational(t * kInvSqrt2));
    g[j] = v;
    hi = std::max(hi, std::fabs(v));
  }
  return hi;
}

FULL_WIDTH void gelu_quantize_body(const void* p, int64_t r0, int64_t r1) {
  auto* c = static_cast<const Call*>(p);
  const int64_t n = c->width;
  const float* acc = static_cast<const float*>(c->in[0].data);
  const float* s = static_cast<const float*>(c->in[1].data);
  const float* b = static_cast<const float*>(c->in[2].data);
  auto* q = static_cast<uint8_t*>(c->out[0].data);
  auto* qs = static_cast<float*>(c->out[1].data);
  std::vector<float> row(static_cast<size_t>(n));
  float* g = row.data();
  for (int64_t r = r0; r < r1; ++r) {
    const float hi = gelu_row(acc + r * n, s[r], b, n, g);
    qs[r] = quantize_scaled(g, n, hi, c->attrs->min_scale, q + r * n);
  }
}

FULL_WIDTH void bias_gelu_body(const void* p, int64_t r0, int64_t r1) {
  auto* c = static_cast<const Call*>(p);
  const int64_t n = c->width;
  const float* x = static_cast<const float*>(c->in[0].data);
  const float* b = static_cast<const float*>(c->in[1].data);
  auto* y = static_cast<float*>(c->out[0].data);
  for (int64_t r = r0; r < r1; ++r) gelu_row(x + r * n, 1.0f, b, n, y + r * n);
}

// The rows [r0, r1) of LayerNorm(residual + (x * s + b)) into y, s a scale per row or none (1);
// with q, each row's quantization too (scale into qs)
inline void residual_norm_rows(const Call& c, const float* x, const float* s, const float* b,
                               const float* res, const float* gamma, const float* beta,
                               int64_t r0, int64_t r1, float* y, uint8_t* q, float* qs) {
  const int64_t n = c.width;
  for (int64_t r = r0; r < r1; ++r) {
    float* yr = y + r * n;
    const float* rr = res + r * n;
    dequant_bias_row(x + r * n, s ? s[r] : 1.0f, b, n, yr);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) yr[j] = rr[j] + yr[j];
    layer_norm_row(yr, n, gamma, beta, c.attrs->epsilon);
    if (q) qs[r] = quantize_row(yr, n, c.attrs->min_scale, q + r * n);
  }
}

void residual_norm_quantize_body(const void* p, int64_t r0, int64_t r1) {
  auto* c = static_cast<const Call*>(p);
  auto f = [c](int i) { return static_cast<const float*>(c->in[i].data); };
  residual_norm_rows(*c, f(0), f(1), f(2), f(3), f(4), f(5), r0, r1,
                     static_cast<float*>(c->out[0].data), static_cast<uint8_t*>(c->out[1].data),
                     static_cast<float*>(c->out[2].data));
}

void bias_residual_norm_body(const void* p, int64_t r0, int64_t r1) {
  auto* c = static_cast<const Call*>(p);
  auto f = [c](int i) { return static_cast<const float*>(c->in[i].data); };
  residual_norm_rows(*c, f(0), nullptr, f(1), f(2), f(3), f(4), r0, r1,
                     static_cast<float*>(c->out[0].data), nullptr, nullptr);
}

// ------------------------------------------------------------------ attention per sequence
// Contraction on from here to the end of the section: the products of attention run as fused
// multiply-adds (no plain graph to match bit for bit; the tests hold it to fp32 tolerance).
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Vec vload(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline Vec vsplat(float x) { return Vec{} + x; }
inline float hsum(Vec v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// exp(x) for x <= 0: Cody-Waite reduction x = n ln2 + r and Cephes' degree-6 polynomial for
// exp(r) (relative error about 1e-7); 0 below -87 (and for -inf).
inline Vec vexp_nonpositive(Vec x) {
  const Vec lo = vsplat(-87.0f);
  const Vec xc = x < lo ? lo : x;
  const Vec magic = vsplat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vec t = xc * 1.44269504088896341f + magic;
  const Vec n = t - magic;
  Vec r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec p = vsplat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vec e = (p * r) * r + r + 1.0f;
  const IVec bits = (((IVec)t - 0x4B400000) + 127) << 23;  // 2^n
  const Vec res = e * (Vec)bits;
  return x < lo ? vsplat(0.0f) : res;
}

struct AttnCall {
  const float* qkv = nullptr;
  const float* bias = nullptr;  // [3H] added to qkv as it is read, or none
  float* out = nullptr;
  int64_t hidden = 0, heads = 0, head_size = 0;
  float scale = 0.0f;
  std::vector<int64_t> start, length;  // per sequence
  std::vector<int64_t> by_length;      // sequences, longest first (work order only)
};

constexpr int kRows = kLanes == 16 ? 8 : 4;  // query rows per block

// acc[r] += x[r][k] * (v0, v1) for the kRows rows: one step of both products, scores
// (x the queries, k a channel, v the keys' K^T) and context (x the probabilities, k a key,
// v its V row)
inline void add_outer(Vec (&acc)[kRows][2], const float* const* x, int64_t k, Vec v0, Vec v1) {
  for (int r = 0; r < kRows; ++r) {
    const float xr = x[r][k];
    acc[r][0] += xr * v0;
    acc[r][1] += xr * v1;
  }
}

// Context rows of `rows` (<= kRows) queries whose unnormalised probabilities are p[r] and
// whose sums are sum[r]: out[r] = (sum_j p[r][j] v[j]) / sum[r], V row j at v + j * v_stride
// and dp (a whole number of vectors, the caller pads) of it read; d of each row written.
// Two vectors of the head at a time for all kRows rows, so each V load feeds kRows rows.
void context_rows(const float* const* p, const float* sum, int rows, const float* v,
                  int64_t v_stride, int64_t len, float* const* out, int64_t d, int64_t dp) {
  float inv[kRows];
  for (int r = 0; r < kRows; ++r) inv[r] = 1.0f / sum[r];
  for (int64_t c0 = 0; c0 < dp; c0 += 2 * kLanes) {
    const bool two = c0 + kLanes < dp;
    Vec acc[kRows][2];
    for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = Vec{};
    if (two) {
      for (int64_t j = 0; j < len; ++j)
        add_outer(acc, p, j, vload(v + j * v_stride + c0), vload(v + j * v_stride + c0 + kLanes));
    } else {
      for (int64_t j = 0; j < len; ++j) {
        const Vec v0 = vload(v + j * v_stride + c0);
        for (int r = 0; r < kRows; ++r) acc[r][0] += p[r][j] * v0;
      }
    }
    const int64_t n = std::min<int64_t>(d - c0, two ? 2 * kLanes : kLanes);
    float tmp[2 * kLanes];
    for (int r = 0; r < rows; ++r) {
      vstore(tmp, acc[r][0] * inv[r]);
      vstore(tmp + kLanes, acc[r][1] * inv[r]);
      std::memcpy(out[r] + c0, tmp, static_cast<size_t>(n) * sizeof(float));
    }
  }
}

// One (sequence, head): softmax(q k^T * scale) v over the sequence's own tokens.
void attention_unit(const AttnCall& a, int64_t seq, int64_t h) {
  const int64_t len = a.length[seq], d = a.head_size, hidden = a.hidden, stride = 3 * hidden;
  const int64_t lp = round_up(len, 2 * kLanes), dp = round_up(d, kLanes);
  const float* base = a.qkv + a.start[seq] * stride;
  thread_local std::vector<float> kt_buf, v_buf, s_buf, q_buf;
  kt_buf.resize(static_cast<size_t>(d * lp));  // K^T [d, lp], zero past len
  s_buf.resize(static_cast<size_t>(kRows * lp));
  float* kt = kt_buf.data();
  float* s = s_buf.data();
  // the bias of this head's Q, K and V (each added as the graph's Add would: one rounding)
  static const float kNoBias[1] = {0.0f};
  const bool biased = a.bias != nullptr;
  const float* bq = biased ? a.bias + h * d : kNoBias;
  const float* bk = biased ? a.bias + hidden + h * d : kNoBias;
  const float* bv = biased ? a.bias + 2 * hidden + h * d : kNoBias;
  // K^T, 16 keys at a time: reads 16 rows' head slices (L1-resident), writes whole lines
  constexpr int64_t kTile = 16;
  for (int64_t j0 = 0; j0 < len; j0 += kTile) {
    const int64_t n = std::min(kTile, len - j0);
    const float* k = base + j0 * stride + hidden + h * d;
    for (int64_t c = 0; c < d; ++c) {
      const float b = bk[biased ? c : 0];
      for (int64_t jj = 0; jj < n; ++jj) kt[c * lp + j0 + jj] = k[jj * stride + c] + b;
    }
  }
  for (int64_t c = 0; c < d; ++c) std::fill(kt + c * lp + len, kt + (c + 1) * lp, 0.0f);
  // V rows in place when the head size is whole vectors and there is no bias, else copied
  // (bias added) into rows of dp
  const float* vs = base + 2 * hidden + h * d;
  int64_t v_stride = stride;
  if (dp != d || biased) {
    v_buf.assign(static_cast<size_t>(len * dp), 0.0f);
    for (int64_t j = 0; j < len; ++j)
      for (int64_t c = 0; c < d; ++c) v_buf[j * dp + c] = vs[j * stride + c] + bv[biased ? c : 0];
    vs = v_buf.data();
    v_stride = dp;
  }
  if (biased) q_buf.resize(static_cast<size_t>(kRows * d));
  const Vec scale = vsplat(a.scale);
  IVec iota;
  for (int i = 0; i < kLanes; ++i) iota[i] = i;
  for (int64_t i0 = 0; i0 < len; i0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, len - i0));
    const float* q[kRows];
    for (int r = 0; r < kRows; ++r) q[r] = base + (i0 + std::min(r, rows - 1)) * stride + h * d;
    if (biased) {  // the block's query rows with their bias
      for (int r = 0; r < kRows; ++r) {
        float* qb = &q_buf[r * d];
        for (int64_t c = 0; c < d; ++c) qb[c] = q[r][c] + bq[c];
        q[r] = qb;
      }
    }
    // scores of kRows queries against every key, two vectors of keys at a time; keys past
    // len masked to -inf, and each row's running maximum kept on the way
    Vec mx[kRows];
    for (int r = 0; r < kRows; ++r) mx[r] = vsplat(-INFINITY);
    for (int64_t jb = 0; jb < lp; jb += 2 * kLanes) {
      Vec acc[kRows][2];
      for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = Vec{};
      for (int64_t c = 0; c < d; ++c)
        add_outer(acc, q, c, vload(kt + c * lp + jb), vload(kt + c * lp + jb + kLanes));
      const IVec key0 = iota + static_cast<int32_t>(jb), key1 = key0 + kLanes;
      const IVec n = IVec{} + static_cast<int32_t>(len);
      for (int r = 0; r < kRows; ++r) {
        const Vec x0 = key0 < n ? acc[r][0] * scale : vsplat(-INFINITY);
        const Vec x1 = key1 < n ? acc[r][1] * scale : vsplat(-INFINITY);
        vstore(s + r * lp + jb, x0);
        vstore(s + r * lp + jb + kLanes, x1);
        mx[r] = x0 > mx[r] ? x0 : mx[r];
        mx[r] = x1 > mx[r] ? x1 : mx[r];
      }
    }
    // softmax numerators exp(s - max) and their sums
    float sum[kRows];
    const float* p[kRows];
    float* o[kRows];
    for (int r = 0; r < kRows; ++r) {
      float* sr = s + r * lp;
      p[r] = sr;
      o[r] = a.out + (a.start[seq] + i0 + std::min(r, rows - 1)) * hidden + h * d;
      float m = mx[r][0];
      for (int i = 1; i < kLanes; ++i) m = std::max(m, mx[r][i]);
      Vec total{};
      for (int64_t j = 0; j < lp; j += kLanes) {
        const Vec e = vexp_nonpositive(vload(sr + j) - m);
        vstore(sr + j, e);
        total += e;
      }
      sum[r] = hsum(total);
    }
    context_rows(p, sum, rows, vs, v_stride, len, o, d, dp);
  }
}

void run_attention_unit(void* p, size_t i) {
  auto* a = static_cast<const AttnCall*>(p);
  const int64_t u = static_cast<int64_t>(i);
  attention_unit(*a, a->by_length[u / a->heads], u % a->heads);
}

#pragma GCC pop_options

OrtStatus* attention_compute(const Attrs& attrs, OrtKernelContext* ctx) {
  auto bad = [](const std::string& what) {
    return make_status("packed_bert PackedAttention: " + what);
  };
  Tensor qkv, pos, bias, out;
  RETURN_IF(input(ctx, 0, &qkv));
  RETURN_IF(input(ctx, 1, &pos));
  bool has_bias = false;
  RETURN_IF(optional_input(ctx, 2, &bias, &has_bias));
  const int64_t heads = attrs.num_heads;
  if (heads < 1) return bad("num_heads must be >= 1, got " + std::to_string(heads));
  const int64_t width = qkv.shape.empty() ? 0 : qkv.shape.back();
  if (qkv.shape.size() < 2 || width <= 0 || width % (3 * heads) != 0)
    return bad("qkv needs shape [..., tokens, 3 x hidden] with hidden a multiple of num_heads (" +
               std::to_string(heads) + "), got a last axis of " + std::to_string(width));
  const int64_t tokens = qkv.numel() / width;
  if (pos.numel() != tokens)
    return bad("position_ids has " + std::to_string(pos.numel()) + " elements, expected one per "
               "token (" + std::to_string(tokens) + ")");
  if (has_bias && bias.numel() != width)
    return bad("bias has " + std::to_string(bias.numel()) + " elements, expected " +
               std::to_string(width) + " (3 x hidden)");
  AttnCall a;
  a.hidden = width / 3;
  a.heads = heads;
  a.head_size = a.hidden / heads;
  a.scale = attrs.scale > 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(a.head_size));
  RETURN_IF(output(ctx, 0, with_last(qkv.shape, a.hidden), &out));
  a.qkv = static_cast<const float*>(qkv.data);
  a.bias = has_bias ? static_cast<const float*>(bias.data) : nullptr;
  a.out = static_cast<float*>(out.data);
  const auto* p = static_cast<const int64_t*>(pos.data);
  for (int64_t t = 0; t < tokens; ++t) {
    if (t == 0 || p[t] != p[t - 1] + 1) {
      a.start.push_back(t);
      a.length.push_back(0);
    }
    ++a.length.back();
  }
  a.by_length.resize(a.start.size());
  for (size_t i = 0; i < a.by_length.size(); ++i) a.by_length[i] = static_cast<int64_t>(i);
  std::stable_sort(a.by_length.begin(), a.by_length.end(),
                   [&](int64_t x, int64_t y) { return a.length[x] > a.length[y]; });
  const size_t units = a.start.size() * static_cast<size_t>(heads);
  if (units == 0) return nullptr;
  return parallel_for(ctx, run_attention_unit, units, &a);
}

// ------------------------------------------------------------------------ op descriptions
struct OpSpec {
  const char* name;
  int n_in, n_out;
  int out_types[3];
  void (*body)(const void*, int64_t, int64_t);  // row kernels: rows [r0, r1)
  OrtStatus* (*own_compute)(const Attrs&, OrtKernelContext*);  // the others
  int in_types[6];  // 0: float32
  // row kernels, one letter per input after input 0 (the rows x[..., N]): 's' a scale per
  // row, 'b' a bias [N], 'r' a residual shaped as x, 'g' LayerNorm's gamma or beta [N]
  const char* roles;
  int n_optional = 0;  // the last n_optional inputs a node may leave out
};

const OpSpec kOps[] = {
    {"RowQuantize", 1, 2, {kUint8, kFloat, 0}, row_quantize_body, nullptr, {}, ""},
    {"DequantBias", 3, 1, {kFloat, 0, 0}, dequant_bias_body, nullptr, {}, "sb"},
    {"DequantBiasGeluQuantize", 3, 2, {kUint8, kFloat, 0}, gelu_quantize_body, nullptr, {}, "sb"},
    {"DequantBiasResidualLayerNormQuantize", 6, 3, {kFloat, kUint8, kFloat},
     residual_norm_quantize_body, nullptr, {}, "sbrgg"},
    {"PackedAttention", 3, 1, {kFloat, 0, 0}, nullptr, attention_compute, {kFloat, kInt64}, "", 1},
    {"BiasGelu", 2, 1, {kFloat, 0, 0}, bias_gelu_body, nullptr, {}, "b"},
    {"BiasResidualLayerNorm", 5, 1, {kFloat, 0, 0}, bias_residual_norm_body, nullptr, {}, "brgg"},
};

struct Kernel {
  const OpSpec* spec;
  Attrs attrs;
};

OrtStatus* check_inputs(const OpSpec& spec, const Call& c) {
  const int64_t rows = c.rows, width = c.width;
  auto bad = [&](const std::string& what) {
    return make_status(std::string("packed_bert ") + spec.name + ": " + what);
  };
  if (c.in[0].shape.empty() || width <= 0) return bad("input 0 needs a last axis of size >= 1");
  for (int i = 1; i < spec.n_in; ++i) {
    const std::string got = std::to_string(c.in[i].numel());
    const char role = spec.roles[i - 1];
    if (role == 's' && c.in[i].numel() != rows)
      return bad("scale has " + got + " elements, expected one per row (" + std::to_string(rows) +
                 ")");
    if (role == 'b' && c.in[i].numel() != width)
      return bad("bias has " + got + " elements, expected " + std::to_string(width));
    if (role == 'r' && c.in[i].numel() != rows * width)
      return bad("residual's shape differs from input 0's");
    if (role == 'g' && c.in[i].numel() != width)
      return bad("gamma and beta need " + std::to_string(width) + " elements each");
  }
  return nullptr;
}

OrtStatus* compute(void* kernel, OrtKernelContext* ctx) {
  auto* k = static_cast<Kernel*>(kernel);
  const OpSpec& spec = *k->spec;
  if (spec.own_compute != nullptr) return spec.own_compute(k->attrs, ctx);
  Call c;
  c.attrs = &k->attrs;
  for (int i = 0; i < spec.n_in; ++i) RETURN_IF(input(ctx, i, &c.in[i]));
  const std::vector<int64_t>& shape = c.in[0].shape;
  c.width = shape.empty() ? 0 : shape.back();
  c.rows = c.width > 0 ? c.in[0].numel() / c.width : 0;
  RETURN_IF(check_inputs(spec, c));
  for (int o = 0; o < spec.n_out; ++o) {
    // row outputs take input 0's shape; a per-row scale is [..., 1]
    bool scale_out = spec.out_types[o] == kFloat && o > 0;
    RETURN_IF(output(ctx, o, scale_out ? with_last(shape, 1) : shape, &c.out[o]));
  }
  RowJob job;
  job.rows = c.rows;
  job.body = spec.body;
  job.self = &c;
  return parallel_rows(ctx, job);
}

// ------------------------------------------------------------- ONNX Runtime's OrtCustomOp
struct CustomOp {  // OrtCustomOp, version 16
  uint32_t version;
  void* (*CreateKernel)(const CustomOp*, const OrtApi*, const OrtKernelInfo*);
  const char* (*GetName)(const CustomOp*);
  const char* (*GetExecutionProviderType)(const CustomOp*);
  int (*GetInputType)(const CustomOp*, size_t);
  size_t (*GetInputTypeCount)(const CustomOp*);
  int (*GetOutputType)(const CustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const CustomOp*);
  void (*KernelCompute)(void*, OrtKernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const CustomOp*, size_t);
  int (*GetOutputCharacteristic)(const CustomOp*, size_t);
  int (*GetInputMemoryType)(const CustomOp*, size_t);
  int (*GetVariadicInputMinArity)(const CustomOp*);
  int (*GetVariadicInputHomogeneity)(const CustomOp*);
  int (*GetVariadicOutputMinArity)(const CustomOp*);
  int (*GetVariadicOutputHomogeneity)(const CustomOp*);
  OrtStatus* (*CreateKernelV2)(const CustomOp*, const OrtApi*, const OrtKernelInfo*, void**);
  OrtStatus* (*KernelComputeV2)(void*, OrtKernelContext*);
  void* unused[8];  // fields of later versions, read only when version says so: left null
  const OpSpec* spec;  // ours, after the record ONNX Runtime reads
};

template <class T>
T attr_or(const OrtKernelInfo* info, const char* name, T fallback) {
  T v = fallback;
  const Slot slot = std::is_same<T, float>::value ? KernelInfoGetAttribute_float
                                                   : KernelInfoGetAttribute_int64;
  OrtStatus* st =
      api_fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, T*)>(slot)(info, name, &v);
  if (st != nullptr) {
    api_fn<void (*)(OrtStatus*)>(ReleaseStatus)(st);
    return fallback;
  }
  return v;
}

OrtStatus* create_kernel(const CustomOp* op, const OrtApi*, const OrtKernelInfo* info, void** out) {
  auto* k = new Kernel{op->spec, Attrs{}};
  k->attrs.min_scale = attr_or(info, "min_scale", k->attrs.min_scale);
  k->attrs.epsilon = attr_or(info, "epsilon", k->attrs.epsilon);
  k->attrs.num_heads = attr_or(info, "num_heads", k->attrs.num_heads);
  k->attrs.scale = attr_or(info, "scale", k->attrs.scale);
  *out = k;
  return nullptr;
}

void* create_kernel_v1(const CustomOp*, const OrtApi*, const OrtKernelInfo*) { return nullptr; }
void compute_v1(void*, OrtKernelContext*) {}
void destroy(void* k) { delete static_cast<Kernel*>(k); }
const char* op_name(const CustomOp* op) { return op->spec->name; }
const char* on_cpu(const CustomOp*) { return "CPUExecutionProvider"; }
int input_type(const CustomOp* op, size_t i) {  // float32 unless the op says otherwise
  return op->spec->in_types[i] ? op->spec->in_types[i] : kFloat;
}
size_t input_count(const CustomOp* op) { return static_cast<size_t>(op->spec->n_in); }
int output_type(const CustomOp* op, size_t i) { return op->spec->out_types[i]; }
size_t output_count(const CustomOp* op) { return static_cast<size_t>(op->spec->n_out); }
int required(const CustomOp*, size_t) { return 0; }   // INPUT_OUTPUT_REQUIRED
// INPUT_OUTPUT_OPTIONAL (1) for the op's last n_optional inputs, else required (0)
int input_characteristic(const CustomOp* op, size_t i) {
  return static_cast<int>(i) >= op->spec->n_in - op->spec->n_optional ? 1 : 0;
}
int default_memory(const CustomOp*, size_t) { return 0; }  // OrtMemTypeDefault
int one(const CustomOp*) { return 1; }

CustomOp make_op(const OpSpec* spec) {
  CustomOp op;
  std::memset(&op, 0, sizeof(op));
  op.version = 16;
  op.CreateKernel = create_kernel_v1;
  op.GetName = op_name;
  op.GetExecutionProviderType = on_cpu;
  op.GetInputType = input_type;
  op.GetInputTypeCount = input_count;
  op.GetOutputType = output_type;
  op.GetOutputTypeCount = output_count;
  op.KernelCompute = compute_v1;
  op.KernelDestroy = destroy;
  op.GetInputCharacteristic = input_characteristic;
  op.GetOutputCharacteristic = required;
  op.GetInputMemoryType = default_memory;
  op.GetVariadicInputMinArity = one;
  op.GetVariadicInputHomogeneity = one;
  op.GetVariadicOutputMinArity = one;
  op.GetVariadicOutputHomogeneity = one;
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.spec = spec;
  return op;
}

CustomOp g_ops[sizeof(kOps) / sizeof(kOps[0])];

}  // namespace

extern "C" {

// Called by ONNX Runtime when a session registers this library.
__attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                    const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(kApiVersion);
  if (api == nullptr) return nullptr;  // cannot even make a status: ONNX Runtime older than 1.18
  g_api = api;
  const char* build = api_fn<const char* (*)()>(GetBuildInfoString)();
  if (build == nullptr || std::strncmp(build, "ORT Build Info", 14) != 0)
    return make_status("packed_bert kernels: this ONNX Runtime's API table is not laid out as "
                       "expected (GetBuildInfoString)");
  static bool made = false;
  if (!made) {
    for (size_t i = 0; i < sizeof(kOps) / sizeof(kOps[0]); ++i) g_ops[i] = make_op(&kOps[i]);
    made = true;
  }
  OrtCustomOpDomain* domain = nullptr;  // one per session; ONNX Runtime needs it to outlive it
  RETURN_IF(api_fn<OrtStatus* (*)(const char*, OrtCustomOpDomain**)>(CreateCustomOpDomain)(
      "packed_bert", &domain));
  for (auto& op : g_ops)
    RETURN_IF(api_fn<OrtStatus* (*)(OrtCustomOpDomain*, const CustomOp*)>(CustomOpDomain_Add)(
        domain, &op));
  return api_fn<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(AddCustomOpDomain)(
      options, domain);
}

}  // extern "C"
