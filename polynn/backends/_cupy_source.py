"""CUDA source of the CuPy backend's vectorised elementwise kernels (``_cupy_kernels``).

Each kernel walks its array with a grid-stride loop in packs of 16 bytes (four float32 or two
float64 values: one vector load and one store per pack), then a scalar tail. On an H200 a
bias + ReLU written this way moved 3.6 TB/s where CuPy's ``ElementwiseKernel`` with
broadcast indexing moved 1.6 (``gpu-runs`` probes). ``K`` selects the activation (0: none,
1: sigmoid, 2: tanh, 3: ReLU, 4: leaky ReLU), ``N`` the pack size (1 where the arrays are not
16-byte aligned, or a row does not hold whole packs). The formulas and their order are those
of ``polynn.kernels`` (compiled without contracting multiply-adds), so each kernel equals the
array API default up to the rounding of the math library's ``tanh``.
"""

from __future__ import annotations

__all__ = ["ACTIVATION_CODES", "SOURCE", "names"]

#: The activation codes ``K`` of the kernels.
ACTIVATION_CODES = {None: 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4}

SOURCE = r"""
template <typename T, int N> struct __align__(sizeof(T) * N) Pack { T v[N]; };

// s: leaky ReLU's slope; r = 1 - s, rounded from double on the host as the default's is.
template <typename T, int K>
__device__ __forceinline__ T act_value(T v, T s, T r) {
    const T h = (T)0.5, zero = (T)0;
    if (K == 1) return h * tanh(h * v) + h;
    if (K == 2) return tanh(v);
    if (K == 3) return v * (T)(v > zero);
    if (K == 4) return v * ((T)(v > zero) * r + s);
    return v;
}

template <typename T, int K>
__device__ __forceinline__ T act_grad(T d, T u, T s, T r) {
    const T one = (T)1, zero = (T)0;
    if (K == 1) return d * (u * (one - u));
    if (K == 2) return d * (one - u * u);
    if (K == 3) return d * (T)(u > zero);
    if (K == 4) return d * ((T)(u > zero) * r + s);
    return d;
}

// y = act(z + b) with b a row of `cols` values (or none), over n = rows * cols values.
template <typename T, int K, int N>
__global__ void polynn_bias_act(const T* z, const T* b, T* y, long long n, long long cols, T s,
                                T r) {
    const long long packs = n / N;
    const long long step = (long long)gridDim.x * blockDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (long long i = first; i < packs; i += step) {
        Pack<T, N> p = reinterpret_cast<const Pack<T, N>*>(z)[i];
        if (b != nullptr) {
            const long long c = (i * N) % cols;
#pragma unroll
            for (int k = 0; k < N; ++k) p.v[k] = p.v[k] + b[c + k];
        }
#pragma unroll
        for (int k = 0; k < N; ++k) p.v[k] = act_value<T, K>(p.v[k], s, r);
        reinterpret_cast<Pack<T, N>*>(y)[i] = p;
    }
    for (long long e = packs * N + first; e < n; e += step) {
        T v = z[e];
        if (b != nullptr) v = v + b[e % cols];
        y[e] = act_value<T, K>(v, s, r);
    }
}

// out = d * act'(from the output u), over n values (out may be d itself).
template <typename T, int K, int N>
__global__ void polynn_act_grad(const T* d, const T* u, T* out, long long n, T s, T r) {
    const long long packs = n / N;
    const long long step = (long long)gridDim.x * blockDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (long long i = first; i < packs; i += step) {
        Pack<T, N> g = reinterpret_cast<const Pack<T, N>*>(d)[i];
        const Pack<T, N> y = reinterpret_cast<const Pack<T, N>*>(u)[i];
#pragma unroll
        for (int k = 0; k < N; ++k) g.v[k] = act_grad<T, K>(g.v[k], y.v[k], s, r);
        reinterpret_cast<Pack<T, N>*>(out)[i] = g;
    }
    for (long long e = packs * N + first; e < n; e += step) {
        out[e] = act_grad<T, K>(d[e], u[e], s, r);
    }
}

// Softmax cross-entropy of rows of `classes` logits, one thread a row (few classes):
// grad = (softmax(z) - t) / rows and term = sum_j t_j * log_softmax(z)_j, computed as the
// array API default does (shift by the row maximum, exp, sum, log of the sum).
template <typename T>
__global__ void polynn_softmax_xent(const T* z, const T* t, T* grad, T* term, long long rows,
                                    int classes) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += step) {
        const T* zr = z + r * classes;
        const T* tr = t + r * classes;
        T* gr = grad + r * classes;
        T m = zr[0];
        for (int j = 1; j < classes; ++j) m = zr[j] > m || zr[j] != zr[j] ? zr[j] : m;
        T total = (T)0;
        for (int j = 0; j < classes; ++j) total = total + exp(zr[j] - m);
        const T lt = log(total), n = (T)rows;
        T acc = (T)0;
        for (int j = 0; j < classes; ++j) {
            const T shifted = zr[j] - m;
            gr[j] = (exp(shifted) / total - tr[j]) / n;
            acc = acc + tr[j] * (shifted - lt);
        }
        term[r] = acc;
    }
}
"""

_TYPES = ("float", "double")


def names() -> list[str]:
    """Every kernel instantiation the module compiles (its ``name_expressions``)."""
    out = []
    for t in _TYPES:
        size = 4 if t == "float" else 2
        for k in ACTIVATION_CODES.values():
            for n in (1, size):
                out.append(f"polynn_bias_act<{t}, {k}, {n}>")
                out.append(f"polynn_act_grad<{t}, {k}, {n}>")
        out.append(f"polynn_softmax_xent<{t}>")
    return sorted(set(out))
