"""Loop-level float64 oracles: each op of shared/specs/ops.md written as plain
Python loops over scalars, independent of the library's code (no F.pad, no
unfold, no gather). Slow; meant for tiny shapes."""

import math

import torch


def _nested(t):
    return t.detach().double().cpu().tolist()


def pad_source(q, L, mode):
    """F.pad's meaning: the image index read at coordinate q, or None for zero."""
    if 0 <= q < L:
        return q
    if mode == "zeros":
        return None
    if mode == "replicate":
        return 0 if q < 0 else L - 1
    # reflect: mirror about the edge pixels without repeating them
    return -q if q < 0 else 2 * (L - 1) - q


def dynamic_filter2d(x, kernel, kernel_size, dilation, padding_mode, softmax):
    N, C, H, W = x.shape
    k, d = kernel_size, dilation
    K2 = k * k
    G = kernel.shape[1] // K2
    pad = d * (k - 1) // 2
    X, Kn = _nested(x), _nested(kernel)
    out = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for n in range(N):
        for c in range(C):
            g = c // (C // G)
            for h in range(H):
                for w in range(W):
                    taps = [Kn[n][g * K2 + t][h][w] for t in range(K2)]
                    if softmax:
                        m = max(taps)
                        e = [math.exp(v - m) for v in taps]
                        taps = [v / sum(e) for v in e]
                    acc = 0.0
                    for i in range(k):
                        for j in range(k):
                            r = pad_source(h + i * d - pad, H, padding_mode)
                            s = pad_source(w + j * d - pad, W, padding_mode)
                            if r is not None and s is not None:
                                acc += taps[i * k + j] * X[n][c][r][s]
                    out[n][c][h][w] = acc
    return torch.tensor(out, dtype=torch.float64).reshape(N, C, H, W)


def bilinear(img, H, W, y, x):
    """torchvision's rule: 0 at or beyond one pixel outside; missing corners read 0."""
    if not (y > -1 and y < H and x > -1 and x < W):
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    val = 0.0
    for yy, xx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                        (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < H and 0 <= xx < W:
            val += wgt * img[yy][xx]
    return val


def deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask):
    N, Cin, H, W = x.shape
    Cout, Cin_g, kh, kw = weight.shape
    groups = Cin // Cin_g
    K = kh * kw
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    G = offset.shape[1] // (2 * K) if offset is not None else (mask.shape[1] // K if mask is not None else 1)
    X, Wt = _nested(x), _nested(weight)
    Off = _nested(offset) if offset is not None else None
    M = _nested(mask) if mask is not None else None
    B = _nested(bias) if bias is not None else [0.0] * Cout
    out = torch.zeros(N, Cout, Ho, Wo, dtype=torch.float64)
    for n in range(N):
        for o in range(Cout):
            wg = o // (Cout // groups)
            for ho in range(Ho):
                for wo in range(Wo):
                    acc = B[o]
                    for cl in range(Cin_g):
                        c = wg * Cin_g + cl
                        g = c // (Cin // G)
                        for i in range(kh):
                            for j in range(kw):
                                t = i * kw + j
                                dy = Off[n][2 * (g * K + t)][ho][wo] if Off else 0
                                dx = Off[n][2 * (g * K + t) + 1][ho][wo] if Off else 0
                                m = M[n][g * K + t][ho][wo] if M else 1.0
                                py = ho * sh - ph + i * dh + dy
                                px = wo * sw - pw + j * dw + dx
                                if Off:
                                    v = bilinear(X[n][c], H, W, py, px)
                                else:  # ops.md: no offsets, no interpolation (only the grid point is read)
                                    v = X[n][c][py][px] if 0 <= py < H and 0 <= px < W else 0.0
                                acc += Wt[o][cl][i][j] * m * v
                    out[n, o, ho, wo] = acc
    return out


def efficient_attention(value, key, query, gate):
    N, C = value.shape[:2]
    C2 = key.shape[1]
    Lin, Lout = math.prod(key.shape[2:]), math.prod(query.shape[2:])
    V = _nested(value.reshape(N, C, Lin))
    Kt = _nested(key.reshape(N, C2, Lin))
    Q = _nested(query.reshape(N, C2, Lout))
    Gt = _nested(gate) if gate is not None else [[1.0] * C for _ in range(N)]
    out = torch.zeros(N, C, Lout, dtype=torch.float64)
    for n in range(N):
        ksoft = []
        for kk in range(C2):
            m = max(Kt[n][kk]) if Lin else 0.0
            e = [math.exp(v - m) for v in Kt[n][kk]]
            ksoft.append([v / sum(e) for v in e])
        ctx = [[sum(V[n][c][i] * ksoft[kk][i] for i in range(Lin)) for kk in range(C2)] for c in range(C)]
        for j in range(Lout):
            col = [Q[n][kk][j] for kk in range(C2)]
            m = max(col)
            e = [math.exp(v - m) for v in col]
            qsoft = [v / sum(e) for v in e]
            for c in range(C):
                out[n, c, j] = Gt[n][c] * sum(ctx[c][kk] * qsoft[kk] for kk in range(C2))
    return out.reshape(N, C, *query.shape[2:])


def adaptive_bins(L, n):
    """PyTorch's adaptive pooling bins: [floor(b L / n), ceil((b + 1) L / n))."""
    return [((b * L) // n, -((-(b + 1) * L) // n)) for b in range(n)]


def strip_pool(x, sizes):
    N, C, H, W = x.shape
    X = _nested(x)
    result = []
    for n_ in sizes:
        v = torch.zeros(N, C, H, n_, dtype=torch.float64)
        h = torch.zeros(N, C, n_, W, dtype=torch.float64)
        for n in range(N):
            for c in range(C):
                for b, (lo, hi) in enumerate(adaptive_bins(W, n_)):
                    for y in range(H):
                        v[n, c, y, b] = sum(X[n][c][y][lo:hi]) / (hi - lo)
                for b, (lo, hi) in enumerate(adaptive_bins(H, n_)):
                    for xx in range(W):
                        h[n, c, b, xx] = sum(X[n][c][y][xx] for y in range(lo, hi)) / (hi - lo)
        result.append((v, h))
    return result


def strip_expand(v, h, size):
    H, W = size
    N, C, _, nv = v.shape
    nh = h.shape[2]
    V, Hs = _nested(v), _nested(h)
    out = torch.zeros(N, C, H, W, dtype=torch.float64)
    for n in range(N):
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    out[n, c, y, x] = V[n][c][y][(x * nv) // W] + Hs[n][c][(y * nh) // H][x]
    return out
