/* One image-token decode step through the Qwen2-style layers of one text model (the frozen base or
 * the stack), float32 on the CPU, in a single call: what fast.Decoder.step runs as ~45 PyTorch operator
 * calls per layer. At the star-shapes sizes (D = 192) each of those calls costs more in dispatch than
 * in arithmetic, so the step was bound by call count (13% of the memory roofline); here it is bound by
 * reading the weights. Built and loaded by kernel.py (ctypes, no torch headers); the layouts are
 * fast.py's: weights as nn.Linear stores them (out, in), caches (rows, kv_heads, max_len, head_dim),
 * rope tables per step (rows, head_dim) with sin signed for the roll form of rotate_half.
 *
 * Per layer, per row:  h = rms(x)·n1;  q, k, v = h·Wᵀ + b;  rope(q, k);  cache[column] = k, v;
 *                      a = softmax(q·Kᵀ·scale over the valid prefix)·V;  x += a·Woᵀ (+ bo);
 *                      h = rms(x)·n2;  x += (silu(h·Wgᵀ) * h·Wuᵀ)·Wdᵀ
 * and then x = rms(x)·norm (the text model's final norm).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const float *norm1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    const float *norm2, *wg, *bg, *wu, *bu, *wd, *bd;  /* biases may be NULL */
    float *k_cache, *v_cache;                          /* (rows, kv_heads, max_len, head_dim) */
    float eps1, eps2;
} star_layer;

typedef struct {
    int32_t rows, dim, heads, kv_heads, head_dim, inter, max_len, n_layers;
    float scaling, norm_eps;
    const float *norm;          /* the final norm's weight */
    const star_layer *layers;
    float *scratch;             /* star_scratch_floats(...) floats */
} star_part;

size_t star_scratch_floats(int rows, int dim, int heads, int kv_heads, int head_dim, int inter, int max_len) {
    return (size_t)rows * (dim + 2 * heads * head_dim + 2 * kv_heads * head_dim + 2 * inter + dim) + max_len;
}

static void rms_norm(const float *x, const float *w, float eps, int n, float *out) {
    float s = 0.f;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    const float r = 1.f / sqrtf(s / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

static float dot(const float *a, const float *b, int n) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* 8 floats as one value (one AVX register with -march=native on x86; two SSE or NEON ones elsewhere),
 * loadable from any float address: GCC and Clang vector extensions, so the sums stay in registers. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));

static inline v8 load8(const float *p) { return *(const v8u *)p; }
static inline float sum8(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

/* y (rows, out) = x (rows, in) · Wᵀ + b, W (out, in): four output rows at a time, so each x load feeds
 * four products. Every input row (a guided step's cond and uncond rows) goes through the block while
 * its 4 × in weights are still in L1, so the weights come from memory once per step. Measured against
 * an `omp simd` loop that did two input rows per pass (8 sums; it reloaded the inputs for every
 * product): the ten layers 7-10% faster, in A/B runs in one process. */
static void linear(const float *x, int rows, int in, const float *w, const float *b, int out, float *y) {
    const int in8 = in & ~7;
    int o = 0;
    for (; o + 4 <= out; o += 4) {
        const float *w0 = w + (size_t)o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        /* Ask for the block after next now: the step streams ~20 MB of weights from memory a token
         * and the hardware prefetcher alone leaves the loop waiting (measured on star-shapes: the
         * step 20-27% faster with this line; benchmarks/sampler_speed.py). */
        if (o + 12 <= out)
            for (int c = 0; c < 4 * in; c += 16) __builtin_prefetch(w0 + 8 * (size_t)in + c);
        const float c0 = b ? b[o] : 0.f, c1 = b ? b[o + 1] : 0.f, c2 = b ? b[o + 2] : 0.f, c3 = b ? b[o + 3] : 0.f;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * in;
            v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int i = 0; i < in8; i += 8) {
                const v8 u = load8(xr + i);
                a0 += load8(w0 + i) * u, a1 += load8(w1 + i) * u, a2 += load8(w2 + i) * u, a3 += load8(w3 + i) * u;
            }
            float s0 = sum8(a0), s1 = sum8(a1), s2 = sum8(a2), s3 = sum8(a3);
            for (int i = in8; i < in; i++)
                s0 += w0[i] * xr[i], s1 += w1[i] * xr[i], s2 += w2[i] * xr[i], s3 += w3[i] * xr[i];
            float *yr = y + (size_t)r * out + o;
            yr[0] = s0 + c0, yr[1] = s1 + c1, yr[2] = s2 + c2, yr[3] = s3 + c3;
        }
    }
    for (; o < out; o++)
        for (int r = 0; r < rows; r++)
            y[(size_t)r * out + o] = dot(w + (size_t)o * in, x + (size_t)r * in, in) + (b ? b[o] : 0.f);
}

/* The same product, exported for the code adapter and the head (the head's 4,096 × 192 weight is the
 * largest single read of a step; torch's call streams it at a third of this loop's rate). */
void star_linear(const float *x, int rows, int in, const float *w, const float *b, int out, float *y) {
    linear(x, rows, in, w, b, out, y);
}

/* GELU (the exact, erf form: nn.GELU(approximate="none")), in place */
void star_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752f));
}

/* x·cos + roll(x, half)·signed_sin, in place on one head's vector */
static void rope(float *x, const float *cos, const float *ssin, int hd) {
    const int half = hd / 2;
    for (int d = 0; d < half; d++) {
        const float a = x[d], c = x[d + half];
        x[d] = a * cos[d] + c * ssin[d];
        x[d + half] = c * cos[d + half] + a * ssin[d + half];
    }
}

static void attend(const star_part *p, const star_layer *l, int r, const float *q, const uint8_t *mask,
                   int length, float *scores, float *out) {
    const int hd = p->head_dim, groups = p->heads / p->kv_heads;
    for (int h = 0; h < p->heads; h++) {
        const int g = h / groups;
        const float *K = l->k_cache + ((size_t)r * p->kv_heads + g) * p->max_len * hd;
        const float *V = l->v_cache + ((size_t)r * p->kv_heads + g) * p->max_len * hd;
        const float *qh = q + (size_t)h * hd;
        float best = -INFINITY;
        for (int j = 0; j < length; j++) {
            if (mask && !mask[j]) continue;
            scores[j] = dot(qh, K + (size_t)j * hd, hd) * p->scaling;
            if (scores[j] > best) best = scores[j];
        }
        float total = 0.f;
        float *o = out + (size_t)h * hd;
        for (int d = 0; d < hd; d++) o[d] = 0.f;
        for (int j = 0; j < length; j++) {
            if (mask && !mask[j]) continue;
            const float e = expf(scores[j] - best);
            total += e;
            const float *v = V + (size_t)j * hd;
#pragma omp simd
            for (int d = 0; d < hd; d++) o[d] += e * v[d];
        }
        const float inv = 1.f / total;
        for (int d = 0; d < hd; d++) o[d] *= inv;
    }
}

/* x (rows, dim), in place: through every layer of the part and its final norm. The token's k, v are
 * written at `column`; attention reads columns [0, column] (those unmasked, when mask is given: the
 * (rows, max_len) left-padding mask, whose `column` entry is set here). cos, sin: (rows, head_dim). */
void star_part_step(const star_part *p, float *x, int column, const float *cos, const float *sin, uint8_t *mask) {
    const int R = p->rows, D = p->dim, hd = p->head_dim, I = p->inter;
    const int qd = p->heads * hd, kd = p->kv_heads * hd, length = column + 1;
    float *h = p->scratch, *q = h + (size_t)R * D, *k = q + (size_t)R * qd, *v = k + (size_t)R * kd;
    float *a = v + (size_t)R * kd, *gate = a + (size_t)R * qd, *up = gate + (size_t)R * I;
    float *t = up + (size_t)R * I, *scores = t + (size_t)R * D;
    if (mask)
        for (int r = 0; r < R; r++) mask[(size_t)r * p->max_len + column] = 1;
    for (int li = 0; li < p->n_layers; li++) {
        const star_layer *l = p->layers + li;
        for (int r = 0; r < R; r++) rms_norm(x + (size_t)r * D, l->norm1, l->eps1, D, h + (size_t)r * D);
        linear(h, R, D, l->wq, l->bq, qd, q);
        linear(h, R, D, l->wk, l->bk, kd, k);
        linear(h, R, D, l->wv, l->bv, kd, v);
        for (int r = 0; r < R; r++) {
            const float *c = cos + (size_t)r * hd, *s = sin + (size_t)r * hd;
            for (int hh = 0; hh < p->heads; hh++) rope(q + (size_t)r * qd + (size_t)hh * hd, c, s, hd);
            for (int g = 0; g < p->kv_heads; g++) {
                float *kg = k + (size_t)r * kd + (size_t)g * hd;
                rope(kg, c, s, hd);
                float *kc = l->k_cache + (((size_t)r * p->kv_heads + g) * p->max_len + column) * hd;
                float *vc = l->v_cache + (((size_t)r * p->kv_heads + g) * p->max_len + column) * hd;
                const float *vg = v + (size_t)r * kd + (size_t)g * hd;
                for (int d = 0; d < hd; d++) { kc[d] = kg[d]; vc[d] = vg[d]; }
            }
            attend(p, l, r, q + (size_t)r * qd, mask ? mask + (size_t)r * p->max_len : NULL, length, scores,
                   a + (size_t)r * qd);
        }
        linear(a, R, qd, l->wo, l->bo, D, t);
        for (size_t i = 0; i < (size_t)R * D; i++) x[i] += t[i];
        for (int r = 0; r < R; r++) rms_norm(x + (size_t)r * D, l->norm2, l->eps2, D, h + (size_t)r * D);
        linear(h, R, D, l->wg, l->bg, I, gate);
        linear(h, R, D, l->wu, l->bu, I, up);
        for (size_t i = 0; i < (size_t)R * I; i++) gate[i] = gate[i] / (1.f + expf(-gate[i])) * up[i];
        linear(gate, R, I, l->wd, l->bd, D, t);
        for (size_t i = 0; i < (size_t)R * D; i++) x[i] += t[i];
    }
    for (int r = 0; r < R; r++) rms_norm(x + (size_t)r * D, p->norm, p->norm_eps, D, x + (size_t)r * D);
}
