"""Fused diagonal selective scans in Triton: the (Bt, L, K, n) state never goes to memory.

Notation: batch Bt, length L, K channels, n states per channel. Δ is δ (+ bias), through
softplus when asked. Discretisation per channel k, state j, step t (:mod:`models.discretize`):

* ``zoh``:        Ā = exp(ΔA),                   F = (Ā - 1)/A
* ``zoh_euler``:  Ā = exp(ΔA),                   F = Δ           (Mamba's kernels)
* ``bilinear``:   Ā = (1 + ΔA/2)/(1 - ΔA/2),     F = Δ/(1 - ΔA/2)

A is real (negative) or complex (negative real part); complex numbers live in the kernels
as two real planes, and every complex operation is written out on them (``_cmul`` ...).

Entry points, each with a pure-PyTorch step-by-step twin ``*_reference`` that defines it:

* :func:`selective_scan` (SISO: Mamba, S4D). u: (Bt, L, K) real.
      h_t[k, j] = Ā_t[k, j] h_{t-1}[k, j] + F_t[k, j] B_t[j] u_t[k],   h_{-1} = 0
      y_t[k] = scale · Re Σ_j C_t[(k,) j] h_t[k, j] + D[k] u_t[k],   out = y ⊙ silu(z)
* :func:`diagonal_scan` (MIMO, S5: B and C are matmuls outside).
      h_t[k] = Ā_t[k] h_{t-1}[k] + F_t[k] u_t[k],   g_t[k] = gain_t[k] h_t[k]
* :func:`selective_state_step`: one step of :func:`selective_scan` from a given state.

Dtypes. The accumulation dtype is A's real dtype, float32 or float64 (float64 for float64
inputs, float32 for every other). The recurrent state, the discretisation, the readout, every
sum over n, time, channels or programs, and the stored chunk-start states are in it, and so
are the tensors of O(K n) size: A (or its complex64/complex128), D, the Δ bias, a (K,) δ, a
fixed C (K, n), the scale. Each per-step tensor (Bt, L, ·), (Bt, ·) in the step, of real
dtype (u, δ, B_t, C_t, z, gain) may instead be bfloat16 or float16 when the accumulation is
float32, each independently (under autocast they are bf16): the kernels load it in its own
dtype and widen it in registers (:func:`_load`), so a call computes exactly what the float32
kernel computes on the same values widened. The output y (g of a real :func:`diagonal_scan`)
is written in u's dtype, and the backward writes du, dδ, dz, dgain in their inputs' dtypes
(:func:`_store`: rounded to nearest on a GPU; triton's interpreter truncates instead, so
under TRITON_INTERPRET a bf16 write is within one bf16 ulp, 2^-7 relative, instead of half of
one). The gradients of B_t and of a shared real C_t are per-block partial sums in fp32 (or
atomic sums, below), summed by torch and then rounded to B_t's and C_t's dtypes; dA, dD and the bias gradient stay fp32
(with a bf16 or fp16 dδ the kernel keeps Σ_t dδ in fp32 for the bias; from an fp32 dδ torch
sums it). Complex tensors are complex64 or complex128 (complex bf16 does not exist): a real
bf16 B_t with a complex A is copied to complex64 first, and a complex :func:`diagonal_scan`
writes a complex64 g (a real bf16 u is copied to complex64 first). Tested under the
interpreter in tests/test_triton_scan.py (bf16 and fp16 against the float32 kernel on the same
values: one ulp per element written, relative norm errors 3-4e-3 for bf16 and 2-3e-4 for fp16;
fp32 gradients equal to 4e-7). A real exp in fp32 (Ā = exp(ΔA)) is, compiled for an NVIDIA GPU,
2^(ΔA log2 e) by one ex2.approx.ftz: the approximation tl.exp takes too, less the range test
and two scalings that keep its results below 2^-126 subnormal (they are 0 here, Ā for ΔA
below about -87.3), its argument Δ·(A log2 e) with A scaled once per state and channel, as
mamba-ssm's kernels scale it (:func:`_exp_product`; triton 3.6, aligned: 3 to 6 fewer
instructions a pass in the Mamba kernels' loops). Under the interpreter, in fp64, on ROCm and for a complex A
the kernels take tl.exp, so the tests here run that; ``make gpu-check`` runs them natively.

Kernels. A :func:`selective_scan` program takes BLOCK_K channels of one batch element (grid
(⌈K / BLOCK_K⌉, Bt): consecutive programs take neighbouring channels, which share B and C)
and walks L in chunks of T = ``chunk_size`` steps. Per chunk it loads (T, BLOCK_K) tiles of u,
δ (and z), then loops over the n states one at a time, as mamba-ssm's kernel loops over the states of its channel: for state j it forms the pairs
(Ā_t, F_t B_t[j] u_t) of the (T, BLOCK_K) tile (B_t[j] a (T,) column), solves the chunk with
``tl.associative_scan`` under  (a1, b1) • (a2, b2) = (a2 a1, a2 b1 + b2),  adds
(Ā_{t0}···Ā_t) h_{t0-1}[j] for the state entering the chunk, and adds Re C_t[j] h_t[j] into
the (T, BLOCK_K) readout. No tile of the forward has an n axis, so its registers do not grow
with n: the state entering a chunk goes through memory. For state j the threads that hold the
chunk's last step store h_{t0+T-1}[j] (a masked store, BLOCK_K values), and in the next chunk
every thread loads it (one broadcast load; a barrier per chunk orders the two): into the
chunk-start states the backward reads, with autograd, or into a two-slot scratch (Bt, 2, n,
K) without, chunk c's in slot c mod 2; slot 0 is zeroed by the host. The states the backward
reads are those entering its own chunks, (Bt, ⌈L/T'⌉, n, K) for its T' (1/T' of the states),
a divisor of the forward's T: the threads holding the last step of every T' steps store them
(the forward's own tile, :data:`_FORWARD_TILES`, walks longer chunks than its backward). Steps past L and channels past K are identities (a = 1, b = 0);
where the chunks and channel blocks cover L and K exactly (EVEN, :func:`_even`: the benchmark
shape) the kernels are compiled without those masks and the selects they cost (10 to 18%
fewer instructions in the Mamba kernels' loops). A program moves its
pointers to its batch element once (64-bit) and indexes inside it in 32 bits, which bounds
one batch element: L·K and L·n (2·L·n when complex) below 2^31; the batch, the grid's second
axis, is at most 65535 (a ValueError otherwise). A
:func:`diagonal_scan` program walks its chunks the same way with n = 1: one state per channel,
no loop over states (grid (Bt, ⌈K / BLOCK_K⌉), 64-bit offsets throughout).

The backward walks the chunks in reverse. It recomputes the chunk's states h_t from the
stored chunk-start state and solves the adjoint recurrence
λ_t = ∂ℓ/∂h_t (direct) + conj(Ā_{t+1}) λ_{t+1}  as a reversed associative scan of the pairs
(conj(Ā_{t+1}), ∂ℓ/∂h_t), with Ā_{t+1} recomputed from Δ_{t+1} (read one step ahead: a
time-invariant Δ needs nothing more), and λ at the chunk's first step the carry into the
chunk before. From λ:  ∂ℓ/∂(F B u)_t = λ_t,  ∂ℓ/∂Ā_t = λ_t conj(h_{t-1}),  and the chain rule
to u, δ, bias, A, B, C, D, z; with Ā = exp(ΔA) (zoh, zoh_euler) the chain rule needs only
∂ℓ/∂Ā_t conj(Ā_t) = λ_t conj(h_t - x_t), as Ā_t h_{t-1} = h_t - x_t (x_t = F_t B_t u_t), and
only bilinear takes h_{t-1} by a one-row shift of the states (``tl.gather``). Neither tile is
shifted otherwise: a shift moves values between threads (shuffles), and where its layout
differed from the loads' triton computed the chunk's scans twice, once in each layout
(below). Triton before 3.9 compiles a reversed scan to butterfly shuffles that flip each of
its operands across the lanes before and after it (80 of the 116 shuffles a pass of the Mamba
backward's loop in (Bt, K, L) took with triton 3.6, none of 52 with 3.9); there the backward
reads the adjoint's inputs (C_t, Δ_{t+1}, and the chunk's scale·dy once) in reversed step order,
scans them forward and flips λ alone back (FLIP_ADJOINT, :func:`flip_adjoint`: 56 shuffles;
not for a complex time-invariant Ā, where triton 3.6 then computes the discretisation twice),
for a real A on one warp in whole chunks by a gather (:func:`flip_gather`: 8 fewer a pass).
In :func:`selective_scan` this runs per state inside the chunk, as the forward does;
the carries λ (one row per state) and the sums over time of ∂ℓ/∂A and of a fixed C's
gradient are (BLOCK_N, BLOCK_K) tiles, and du, ∂ℓ/∂Δ and the readout y (for ∂ℓ/∂z) are summed
over the states in (T, BLOCK_K) tiles. (Complex gradients follow PyTorch: for real ℓ and
complex w, w.grad = ∂ℓ/∂Re w + i ∂ℓ/∂Im w, so w = f(v) holomorphic gives
v.grad = w.grad · conj(f'(v)).) Sums over batch, time or channels (A, D, bias, a fixed C, a
time-invariant δ, B and C shared by the channels) are written as per-program partial sums
and reduced by torch afterwards: deterministic, no atomics. The one exception is optional:
with ``atomic_sums`` the gradients of a shared B and C, sums over the channels, are added by
every channel block into one (Bt, n, L) tensor with atomic adds (fire-and-forget reductions,
RED in the SASS), as mamba-ssm's kernel adds them, instead of one (Bt, n, L) slice per block
that torch then sums: (K/BLOCK_K - 1)·Bt·n·L fewer elements written and read twice over (2.1
GB for B and C at BLOCK_K 1, batch 8, K 1024, n 16, L 2048), at the price of float sums whose
order, and so last bits, vary from run to run. Its default (:data:`_ATOMIC_SUMS`) is on where a
GPU timed it faster (``make gpu-tune`` times both: the Mamba point in both layouts and the
complex scan with Δ, B and C per step, Measured below), and always off under
``torch.use_deterministic_algorithms(True)``. It adds 0 to 16 instructions to the loop over
states (the Mamba backward at the tiles before, both versions; /ELEM, triton 3.9: 4.66 -> 4.72
to 4.97 -> 4.97 in (Bt, L, K), 3.59 -> 3.73 to 4.50 -> 4.69 in (Bt, K, L)); the budget test
compiles each default with the sums its table gives.

Default tiles (:func:`default_tile`), per kernel, complex A and per-step (selective) Δ.
The Mamba entries and the complex one with Δ, B and C per step are timed on an H200 (below,
"Measured"); the others are chosen from compile-time measurements, not timings: every kernel
compiled for sm_90 by triton's ptxas, registers per thread and spills read by cuobjdump and
ptxas, and the SASS of its main loop (the loop over states of a selective kernel, over chunks
of a diagonal one) by cuobjdump -sass (``python -m models.triton_resources [--bf16]
[--aligned]``; tests/test_kernel_resources.py holds the defaults to at most 128 registers per
thread and no spills). Each is compiled twice: with no argument specialised, and with every
pointer and every integer (L, K, N) marked as a multiple of 16, as triton's JIT compiles a
launch with aligned tensors at L, K, N multiples of 16 (the benchmark shape); the alignment
widens loads and changes the registers by up to 30 either way. Register allocation also changes
between triton versions, so the tiles fit two: triton 3.9 (what a CPU install gets, and CI) and
triton 3.6 (torch 2.11's, on the H200 image the GPU runs used). A selective forward may walk
longer chunks than its backward (its own entry, :data:`_FORWARD_TILES`; only the Mamba point's
have one); otherwise the forward and backward share T, BLOCK_K and the warps being each
kernel's own. Each entry not timed is the forward and backward pair, at one T, with the fewest
warp instructions per element (and state) in their main loops, the two summed: the loop's
instructions times the warps over the T x BLOCK_K elements a pass takes (``/ELEM`` in
:mod:`models.triton_resources`; the more of the two specialisations, triton 3.9), among the
tiles of a sweep (T x BLOCK_K x warps, 1 to 8 elements per thread) that fit all eight compiles
(two versions, fp32 and bf16, two specialisations). It bounds the time the GPU needs to issue
them, not the time it takes: latency and memory are not in it. The real diagonal scan with a
fixed Δ, which no compiled case stands for, keeps the tile of the rule before (the most (T,
BLOCK_K) elements per thread). The complex selective scan with Δ, B and C per step kept it too
until timed: its fewest instructions took a backward at BLOCK_K 1 writing its partial gradients
of the shared complex B and C per channel (8.6 GB at batch 8, K 1024, n 32, L 2048); with
atomic sums that tile timed fastest.

  kernel (preset point, n)                  T  BLOCK_K warps  registers, 3.9 / 3.6,  /ELEM, 3.9 / 3.6
                                                               fp32       bf16        before      now
  selective fwd  (Mamba: real, 16)        128    1     1     72 / 72    72 / 72      2.7 / 2.8   1.7 / 1.7
  selective fwd, no_grad (Mamba)           128    1     1     64 / 64    64 / 64          -       1.7 / 1.7
  selective bwd  (Mamba: real, 16)         64    2     1    115 / 128  118 / 128    13.0 / 12.2  4.0 / 4.3
  selective fwd  (Mamba, (Bt, K, L))       128    2     1     80 / 80    80 / 80          -       1.6 / 1.6
  selective fwd, no_grad (same)            128    2     1     88 / 94    88 / 93          -       1.6 / 1.6
  selective bwd  (Mamba, (Bt, K, L))        64    1     1     72 / 80    72 / 80          -       4.4 / 4.7
  selective fwd  (Mamba LTI: real, 16)     32    8     1     80 / 72   116 / 128     2.6 / 2.8   1.0 / 1.0
  selective bwd  (Mamba LTI: real, 16)     32    1     1     49 / 64    49 / 64     11.8 / 11.0  4.4 / 4.6
  selective fwd  (S4D: complex, 32)        32    2     1     63 / 60    63 / 64     12.9 / 11.2 11.0 / 8.6
  selective bwd  (S4D: complex, 32)        32    1     1     62 / 54    64 / 57     39.8 / 34.8 18.0 / 17.0
  selective fwd  (complex 32, Δ B C / step) 64   1     1     64 / 59    64 / 59     13.4 / 11.8 10.8 / 8.9
  selective bwd  (complex 32, Δ B C / step) 64   1     1     89 / 88    89 / 88     35.2 / 32.4 25.1 / 20.4
  selective step (Mamba; S4D)               -  4; 2    4   26; 34 / 26; 25
  diagonal fwd   (S5: complex)              8   32     1     78 / 78    78 / 78      5.8 / 8.8   2.5 / 2.4
  diagonal bwd   (S5: complex)              8   64     8     80 / 76    80 / 76     24.7 / 15.2 12.6 / 13.8
  diagonal fwd   (S5, Δ and C per step)     8   32     1    114 / 122  114 / 118    14.8 / 13.3  9.9 / 8.3
  diagonal bwd   (S5, Δ and C per step)     8   16     4     74 / 72    72 / 80     38.4 / 35.3 28.7 / 27.1
  diagonal fwd   (real, Δ per step)         8   32     1     72 / 72    72 / 72      4.1 / 4.3   2.4 / 2.5
  diagonal bwd   (real, Δ per step)         8   16     2     62 / 64    70 / 72      9.0 / 11.2  6.8 / 7.6

The Mamba rows and the complex rows with Δ, B and C per step are the tiles an H200 timed
fastest (Measured, below), with their backward's atomic sums, the kernels compiled without
masks where they may be (their /ELEM here: the more of unspecialised and aligned, as printed
per pass of the loop; the aligned compile is the masks-free one); the other rows keep the
proxy's tiles. The backward rows' "now" are those of the backward without shifted tiles
(Kernels, above).
With the shifts (the adjoint through ν_t = conj(Ā_t) λ_t, whose next row gave λ; h_{t-1} a
row of the states), /ELEM 3.9 / 3.6, the more of the two specialisations: Mamba 4.7 / 5.2,
Mamba LTI 4.8 / 5.4, S4D 18.6 / 17.6, complex with Δ, B and C per step 35.2 / 32.4, S5 21.3 /
13.9, S5 with Δ and C per step 34.2 / 30.5, real diagonal 7.6 / 9.1; the Mamba point in (Bt,
K, L) (T 64, BLOCK_K 1) 6.8 / 7.1 -> 4.4 / 4.8 (aligned, the benchmark shape: 3.67 / 4.17 ->
3.59 / 4.09); with many states (the "n" rows of the budget test) Mamba at n 256 44.9 / 48.8 ->
30.9 / 34.8, S4D at n 256 143.4 / 140.1 -> 85.9 / 85.6, complex with Δ, B and C per step at n
64 145.4 / 125.9 -> 113.6 / 102.2 and at n 256 286.8 / 244.0 -> 223.8 / 196.0. Where the shift's
layout differed from the loads' (two steps per thread against one), triton had kept both and
computed each scan of the chunk twice (the unspecialised (Bt, K, L) Mamba backward, the
complex one with Δ, B and C per step, the large-state ones; the diagonal S5 and real ones
computed one of their two twice). Only the Mamba backward in (Bt, L, K) lost (4.7 / 5.2 ->
4.9 / 5.4 unspecialised; aligned 4.69 / 5.14 -> 4.66 / 5.12): at two steps per thread the
exponential of Δ_{t+1} A costs it more than the shift it replaces. All within the budget.
The rows of the kernels with a real A are also those of its exp as one ex2.approx.ftz (Dtypes,
above): before it, the Mamba forward at T 64 1.9 / 1.5*, no-grad 1.8 / 1.5*, backward 4.9 /
5.4, Mamba LTI 1.1 / 1.1 and 4.5 / 5.1, real diagonal 2.5 / 2.6 and 7.0 / 7.7; the Mamba point
in (Bt, K, L) at the benchmark shape (aligned) 1.11 -> 1.02 forward and 3.59 / 4.09 -> 3.41 /
3.91 backward: 3 to 8% fewer instructions; up to 15 registers more in some compiles (the
Mamba forward unspecialised with triton 3.9, 80 -> 87 to 95, unrolled twice now as with 3.6;
the Mamba backward at n 256 with 3.6, 120 -> 128, at the budget's edge), as many or fewer in
the rest.

"before": the tiles of the elements-per-thread rule (the Mamba and S4D forward at T 32, BLOCK_K
16 on 4 warps, their backward BLOCK_K 8 on 8; the diagonal ones at T 16, BLOCK_K 64 on 8 warps
forward). No spills in any (ptxas's spill stores and loads, cuobjdump's local memory). With
triton 3.6 every kernel with a complex A has a 32-byte stack frame that is not a spill: the
local array libdevice's sin and cos use to reduce arguments beyond about 1e5 (its loops are
left out of /ELEM: they run for such arguments only). The forward rows' "now" are those of the
forward that passes the entering state through memory (Kernels, above); with the carried
(BLOCK_N, BLOCK_K) tile it had before, its state read and replaced by masked sums (shuffles
over the states and over the steps), the main loops took more instructions, triton 3.9,
unspecialised / aligned, before -> now: Mamba 165 / 161 -> 131 / 113, no-grad 248 / 206 -> 225
/ 177, (Bt, K, L) 264 / 218 -> 231 / 178 and no-grad 473 / 273 -> 450 / 249, Mamba LTI 205 /
353 -> 173 / 273, S4D 474 / 756 -> 425 / 703, complex with Δ, B and C per step 822 / 859 -> 726
/ 753 (8 to 29% fewer), with 1 to 4 registers more in six of the 3.9 compiles and 2 to 8 in
eight of the 3.6 ones, as many or fewer in the rest (and the LTI forward's bf16 aligned
compile: 128 -> 114 with 3.9, 90 -> 128 with 3.6, at the budget's edge).
*: triton 3.6 unrolls the new loop over states twice in some compiles (the Mamba forward at
T 64, its own tile, with and without autograd, in both specialisations, and with triton 3.9
unspecialised; at T 32 unspecialised; the (Bt, K, L) forward at T 64 aligned: twice the
MUFU.EX2 a pass), so one pass of its main loop takes two states; the starred figures are per state, half
of what ``python -m models.triton_resources`` prints for a pass (the proxy counts one pass of
the loop as one state: a limit of it that the tuner's /ELEM column shares). With the states
out of the forward's registers, its tile no longer depends on n (:func:`default_tile`: from
_LARGE_STATE states only the backward's changes). The Mamba point, forward and backward
together, before that change: 7.1 to 7.6 warp instructions per element and state against 15.0 to 15.7, 2.0 to 2.2x
fewer, and no warp waits for another (one warp per program; 18 to 21 barriers a pass in the
backward before). At batch 8, K 1024, n 16, L 2048 (268 million elements and states) on an
H200 (132 SMs, 4 schedulers each issuing one warp instruction per cycle, 1.98 GHz) that is 1.8
to 2.0 ms of issue for the forward and backward at best, 0.61 to 0.62 ms for the forward
alone, where mamba-ssm's kernel took 1.98 and 0.59 ms (measured on an H200); the tiles before
could not go under 3.9 ms. With the tiles now, at the benchmark shape (aligned, without
masks): the (Bt, K, L) forward 0.77 and backward 3.16 / 3.34 (triton 3.9 / 3.6) warp
instructions per element and state, 1.0 to 1.1 ms of issue for the pair and 0.20 ms for the
forward; Nsight Compute found the kernels issuing at 48 and 57% of the H200's rate (Measured,
below). Not in the count: without atomic sums the backward at BLOCK_K 2 writes its partial
gradients of B and C per two channels, (K/2, Bt, n, L) each, 1.07 GB at that shape where
BLOCK_K 8 wrote 0.27 GB: about 0.45 ms of memory traffic to write and sum them at the H200's
4.8 TB/s (0.11 ms at BLOCK_K 8). In the loop of the forward, 76 of its 297 instructions
(aligned, 3.9) are shuffles: with T across the 32 lanes the scan over a chunk is 5 rounds of
shuffles per state, where a kernel that keeps a run of steps in each thread scans them one
after another. The tiles the 3.9 compile alone had chosen did not all fit 3.6: the S5 forward
at BLOCK_K 64 on 4 warps took 142 registers, and with Δ and C per step it spilled 8 bytes, its
backward at BLOCK_K 32 16 bytes. Nor did all the tiles of the rule before fit the aligned
compile: with triton 3.9 the S4D forward at T 32, BLOCK_K 16 on 4 warps spills 16 bytes in
bf16, and the S5 forward with Δ and C per step at BLOCK_K 64 on 8 warps 4 bytes.

The selective kernels before the loop over states held (T, BLOCK_K, n) tiles: at T 32,
BLOCK_K 8 the Mamba forward took 255 registers and its backward 255 with spills
(33.5 million local-memory requests measured by Nsight Compute on an H200), and fitting them in
128 registers took T = 8 or 4 (Mamba backward 122, complex backward with Δ, B and C per step
128, its bf16 compile 48 bytes of spills). With the loop, T = 32 fits with 1 to 4 (T, BLOCK_K)
elements per thread (the Mamba backward on 4 warps, 2 per thread, takes 120 registers in fp32
but spills 8 bytes in bf16, so it ran on 8 warps). The backward's entries hold for up to 32
states. From n = 64 (:data:`_LARGE_STATE`) its carried (BLOCK_N, BLOCK_K) tiles set its tile,
whatever the entry: BLOCK_K = 512 / BLOCK_N but not below 4 (8 at n = 64, 4 from n = 128; at
BLOCK_K 2 the Mamba backward at n = 256 spills 16 bytes in bf16), on 8 warps at n = 64 and 16
from n = 128, or from n = 64 for the complex backward with Δ, B and C per step
(:func:`_large_state_backward_warps`: on 8 warps it spills 48 bytes in bf16 at n = 64 with
triton 3.6; on 4, 8 bytes with 3.9). The forward compiles the same for any n (it has no tile
with an n axis) and keeps its entry's tile. The budget test holds the Mamba and S4D backward
at n = 256 and the complex one with Δ, B and C per step at n = 64 and 256 (their "n 64" and
"n 256" rows): no spills and at most 128 registers in both versions and both specialisations. Whether the tiles of the other entries are the fastest on a GPU was not measured
(``make gpu-tune`` times the candidates, ``make gpu-check`` these).

Measured (``make gpu-tune``'s timings: one H200, torch 2.11, triton 3.6, float32, batch 8,
K 1024, n 16 (32 complex), L 2048, medians of 10 calls, in two runs on 2026-11-30, the second
after FLIP_ADJOINT and EVEN; every candidate checked against the default tile at its T:
relative errors <= 2.8e-7; a backward's time includes torch's sums of its partial gradients of
B and C, or the zeroing of the tensor it adds them into). The fastest forward and backward,
milliseconds (T, BLOCK_K; one warp each):

  point, layout                  run  forward                        backward, atomic sums    without
  Mamba, (Bt, K, L)               1   0.53 (128, 2)                  1.95 (128, 1)            2.48 (64, 1)
                                  2   0.43 (128, 2), 0.54 (128, 1)   1.75 (64, 1), 1.88 (128, 1)  2.15 (64, 2)
  Mamba, (Bt, L, K)               1   0.81 (128, 1)                  2.28 (64, 2)             2.48 (64, 2)
                                  2   0.78 (128, 1), 0.77 (256, 1)   2.40 (64, 2)             2.58 (64, 2)
  complex, Δ B C per step         2   4.13 (64, 1)                   10.01 (64, 1)            11.68 (64, 1)

The entries are run 2's: in (Bt, K, L) the forward at T 128, BLOCK_K 2 and the backward at
T 64, BLOCK_K 1 with atomic sums, 0.43 + 1.75 = 2.18 ms (the pair at T 64 before both runs:
3.30 ms; mamba-ssm's selective_scan_fn took 0.59 and 1.98 ms at this shape in an earlier run);
in (Bt, L, K) 0.78 + 2.40 = 3.18 ms (4.60 before); the complex scan with Δ, B and C per step
4.13 + 10.01 = 14.1 ms, where its tile before (T 16, BLOCK_K 16 forward on 4 warps, 8
backward) took 6.07 + 22.39 = 28.5 ms in the same run. Atomic sums made each point's fastest
backward tile 7 to 26% faster (not every tile: a few on two warps or at BLOCK_K 2 to 4 took as
long or longer), and brought the (Bt, K, L) scan's peak memory to 203 MB from 2515 MB
(``ablate.bench``, below). The code changed between the runs (FLIP_ADJOINT, EVEN), so their
differences mix the changes with the spread of timings from one run to another.

Within run 2, ``triton.testing.do_bench`` of selective_scan at the tiles then (forward T 128,
BLOCK_K 1; backward T 128 in (Bt, K, L), T 64 BLOCK_K 2 in (Bt, L, K)), FLIP_ADJOINT and
EVEN each on or off, forward and backward / forward without autograd, ms: (Bt, K, L) both
2.55 / 0.46, FLIP_ADJOINT alone 2.45 / 0.51, EVEN alone 2.39 / 0.46, neither 2.35 / 0.42;
(Bt, L, K) 3.21 / 0.72, 2.97 / 0.74, 3.05 / 0.72, 3.17 / 0.74. The forward does not take
FLIP_ADJOINT, yet its two timings without EVEN differ by 0.09 ms: these timings spread as
much as the effects, and show neither choice faster or slower. Both stay for what the proxy
counts (fewer instructions and shuffles), untimed beyond that.

Nsight Compute in run 2 (``ncu --clock-control none``, (Bt, K, L) at the tiles then): the
backward took 1.73 ms, 738 million warp instructions, 0.48 issued per scheduler and cycle, 4.8
warps per scheduler (31% occupancy, bounded by its registers), a warp waiting 10.1 cycles
between instructions, 4.4 of them on its loads (L1TEX); the forward 0.46 ms, 271 million
instructions, 0.57 issued per cycle, 7.8 warps per scheduler (50%: at most 32 one-warp
programs per SM), 13.6 cycles between instructions, 7.9 on its loads. Both wait on their
loads most (each state's A, B_t, C_t columns and entering state, read at the top of its pass
and used at once); neither is bound by issue or by memory bandwidth (5 to 12% of DRAM's).
Over the 65 forward and 41 backward candidates of the first tuning run (before the loop over
states took its current form) /ELEM ranked the times with Spearman correlations of 0.77 and
0.98.

Against those waits, two variants of the selective kernels' loop over states, each a constexpr
of the kernels and a field of :class:`Tile`. PREFETCH (``Tile.prefetch``, :data:`_PREFETCH`) issues state j +
1's loads (:func:`_state_inputs`) before state j's arithmetic and carries them through the loop,
so that their latency overlaps a state's work instead of stalling it. UNROLL (``Tile.unroll``,
:data:`_UNROLL`) unrolls the loop (triton's ``loop_unroll_factor``), so that the compiler may
interleave two states' independent work, and shares their loop overhead. Compiled for sm_90 with
triton 3.6, fp32, aligned, at the default tiles, registers and /ELEM (per state) without ->
with PREFETCH -> unrolled by 2:

  Mamba (Bt, K, L) forward      64 / 0.75 -> 74 / 0.80 -> 72 / 0.72
  Mamba (Bt, K, L) backward     64 / 3.17 -> 72 / 3.22 -> 72 / 2.93
  Mamba (Bt, L, K) forward      56 / 0.87 -> 64 / 0.97 -> 64 / 0.82
  Mamba (Bt, L, K) backward     96 / 2.91 -> 127 / 2.96 -> 128 / 2.74
  complex, Δ B C per step, bwd  90 / 19.09 -> 94 / 19.62 -> 119 / 19.04

(unaligned, PREFETCH takes the (Bt, L, K) backward to 168 registers, over the budget: the tuner
lists it untimed). No GPU has timed either yet: both tables are empty, and ``make gpu-tune``
times the variants on request (``--prefetch 0,1 --unroll 1,2``, :mod:`models.triton_tune`).
Nor has one timed the kernels since the backward flips λ back by a gather (:func:`flip_gather`)
and the real exp scales A once (:func:`_exp_product`): the "without" column above is with both;
the Mamba backward in (Bt, K, L) took 3.34 /ELEM before them, the forward 0.77.

End to end (``python -m ablate.bench scale=kernel points=ablations modes=[triton,cuda]``,
same GPU, medians of 10 calls, forward and backward ms; in each of the two runs, at that run's
tiles before its tuner's picks): the selective scan alone on (B, D, L) inputs read in place
(``channels_first``, the layer's layout at the Mamba point) 3.31 and 2.78 ms, forward without
autograd 0.64 and 0.64, where mamba-ssm's selective_scan_fn took 2.18 and 2.16, 0.62 and 0.62
(run 2: 1.29x and 1.03x); on (B, L, D) 3.55 and 3.01. The Mamba preset layer 8.61 and 8.08 ms
in ``triton`` mode, 8.06 and 8.09 in ``cuda`` mode (mamba-ssm's kernel inside our layer), 6.96
to 7.00 mamba-ssm's own ``Mamba`` block (``triton`` 1.00x ``cuda`` in run 2; 9.78 against 8.03
before these runs, 20.99 before the loop over states); ``s4d_selective_dt`` 5.69 and 3.99,
``mamba_lti`` 8.30 and 7.47.

Layouts. A shared B or C goes to the kernels state-major, (Bt, n, L) (:func:`_state_major`, one
copy of Bt·L·n elements, differentiable), so that a program reads state j's (T,) column in one
run and writes the per-block partial gradients of B and C the same way, (⌈K/BLOCK_K⌉, Bt, n, L).
The chunk-start states are (Bt, ⌈L/T⌉, n, K), T the backward's: a program writes and reads state j of its
BLOCK_K channels in one run. u, a per-step δ, z, out and their gradients are (Bt, L, K), or
(Bt, K, L) with ``channels_first`` (the kernels' CHANNELS_FIRST: one offset formula,
:func:`_step_offsets`; a channel's T steps are then one run of memory).

Memory traffic, in elements per (batch, step, channel) element (2 bytes each for a bf16 or fp16
per-step tensor, 4 for fp32; states and partial sums at the accumulation dtype),
with c = 2 for complex A (1 for real), s = 1 for a per-step δ (0 for a (K,) δ), g = 1 with
a gate z (else 0), b and q = 1 when B resp. C is shared (Bt, L, n) (else 0); A, D, the bias
and a fixed C are O(K n) and left out, and so is the state-major copy of a shared B and C
(2(b + q)·c·n/K: read and written once per call):

* forward:  u, δ·s, z·g read and out written: 2 + s + g; the (T,) columns of B and C are
  read once per channel block: c·n·(b + q)/BLOCK_K; with autograd the chunk-start states are
  written: c·n/T' (T' the backward's T).
* backward: u, δ·s, z·g, dout read and du, dδ·s, dz·g written: 3 + 2s + 2g; B and C read and
  their per-block partial gradients written, then summed by torch: 3c·n·(b + q)/BLOCK_K; the
  states read: c·n/T; with a bias and an fp32 dδ, torch sums dδ once more for its gradient: s
  (a bf16 or fp16 dδ is summed in the kernel).
* :func:`diagonal_scan` (n = 1; u, g, dg and du complex with A): forward c + s + g + c
  (u, δ, gain read, g written) and c/T for the states; backward 2c + s + g (u, dg, δ, gain
  read) + c + s + g (du, dδ, dgain written) + c/T. A real u with a complex A is first copied
  to complex by torch (1 read, 2 written).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as nnf

from .discretize import discretize

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None

_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_LOW_PRECISION = (torch.bfloat16, torch.float16)  # per-step tensors only; accumulated in fp32
_ACCUMULATION = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32,
                 torch.float16: torch.float32}


def _per_step_dtypes(real: torch.dtype) -> tuple[torch.dtype, ...]:
    """The dtypes a real per-step tensor may have when the accumulation dtype is ``real``."""
    return (real, *_LOW_PRECISION) if real == torch.float32 else (real,)


def interpreted() -> bool:
    """True under triton's interpreter (TRITON_INTERPRET=1): kernels run on CPU tensors, in Python."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def runs_on(device: torch.device | str) -> bool:
    """True when the kernels can run on tensors of ``device``: CUDA tensors with triton
    compiled for the GPU, CPU tensors under the interpreter (TRITON_INTERPRET=1)."""
    if triton is None:
        return False
    kind = torch.device(device).type
    return (kind == "cuda" and not interpreted()) or (kind == "cpu" and interpreted())


def _triton_jit(fn):
    """triton.jit; without triton the function stays plain Python and is never launched
    (every entry point checks that the kernels can run before launching one)."""
    return fn if triton is None else triton.jit(fn)


# ---------------------------------------------------------------------------------------
# Device helpers. A complex value is a pair (re, im) of real tensors; with COMPLEX false it
# is real, and its imaginary part is the constant 0.0, never computed.
# ---------------------------------------------------------------------------------------


@_triton_jit
def _widen(x):
    """x at the accumulation precision: bf16 and fp16 become fp32 (in registers); fp32 and
    fp64 stay as they are."""
    if x.dtype.primitive_bitwidth < 32:
        return x.to(tl.float32)
    else:
        return x


@_triton_jit
def _load(ptr, offs, mask, other):
    """x[offs], widened by :func:`_widen` (a bf16 or fp16 tensor is read in its own dtype)."""
    return _widen(tl.load(ptr + offs, mask=mask, other=other))


@_triton_jit
def _store(ptr, offs, x, mask):
    """x[offs] = x in the tensor's own dtype (an fp32 value stored to bf16 or fp16 is rounded to
    nearest: triton's default cast on a GPU; the interpreter truncates, see the module docstring)."""
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=mask)


@_triton_jit
def _load_complex(ptr, offs, mask, other, COMPLEX: tl.constexpr):
    """x[offs] from a complex tensor stored as (..., 2) real pairs, or from a real one (widened)."""
    if COMPLEX:
        return _load(ptr, 2 * offs, mask, other), _load(ptr, 2 * offs + 1, mask, 0.0)
    else:
        return _load(ptr, offs, mask, other), 0.0


@_triton_jit
def _store_complex(ptr, offs, re, im, mask, COMPLEX: tl.constexpr):
    """x[offs] = re + i·im into a complex tensor stored as (..., 2) real pairs, or re."""
    if COMPLEX:
        _store(ptr, 2 * offs, re, mask)
        _store(ptr, 2 * offs + 1, im, mask)
    else:
        _store(ptr, offs, re, mask)


@_triton_jit
def _cmul(ar, ai, br, bi, COMPLEX: tl.constexpr):
    """a·b = (ar br - ai bi) + i (ar bi + ai br)."""
    if COMPLEX:
        return ar * br - ai * bi, ar * bi + ai * br
    else:
        return ar * br, 0.0


@_triton_jit
def _cmul_conj(ar, ai, br, bi, COMPLEX: tl.constexpr):
    """a·conj(b) = (ar br + ai bi) + i (ai br - ar bi)."""
    if COMPLEX:
        return ar * br + ai * bi, ai * br - ar * bi
    else:
        return ar * br, 0.0


@_triton_jit
def _re_mul(ar, ai, br, bi, COMPLEX: tl.constexpr):
    """Re(a·b) = ar br - ai bi."""
    if COMPLEX:
        return ar * br - ai * bi
    else:
        return ar * br


@_triton_jit
def _re_mul_conj(ar, ai, br, bi, COMPLEX: tl.constexpr):
    """Re(a·conj(b)) = ar br + ai bi."""
    if COMPLEX:
        return ar * br + ai * bi
    else:
        return ar * br


@_triton_jit
def _cscale(ar, ai, s, COMPLEX: tl.constexpr):
    """a·s for real s."""
    if COMPLEX:
        return ar * s, ai * s
    else:
        return ar * s, 0.0


@_triton_jit
def _cdiv(ar, ai, br, bi, COMPLEX: tl.constexpr):
    """a/b = a·conj(b)/|b|²."""
    if COMPLEX:
        norm = br * br + bi * bi
        return (ar * br + ai * bi) / norm, (ai * br - ar * bi) / norm
    else:
        return ar / br, 0.0


@_triton_jit
def _crecip(br, bi, COMPLEX: tl.constexpr):
    """1/b = conj(b)/|b|²."""
    if COMPLEX:
        norm = br * br + bi * bi
        return br / norm, -bi / norm
    else:
        return 1.0 / br, 0.0


# Compiled for an NVIDIA GPU, an fp32 exp is one ex2.approx.ftz (MUFU.EX2), where tl.exp's
# ex2.approx without ftz takes a range test and two scalings around it to keep results below
# 2^-126; the interpreter, fp64 and other GPUs (ROCm) run tl.exp
_HARDWARE_EXP = None if tl is None else tl.constexpr(not interpreted() and torch.version.hip is None)


# A reversed tl.associative_scan compiles, with triton before 3.9, to butterfly shuffles that
# flip every operand across the lanes before and after the scan (80 of the 116 shuffles of the
# Mamba backward's loop over states with triton 3.6, against none of 52 with 3.9). There the
# selective backward reads the adjoint's inputs in reversed step order and scans them forward,
# flipping only λ back (FLIP_ADJOINT, :func:`flip_adjoint`).
_FLIP_ADJOINT = tl is not None and tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 9)


@_triton_jit
def _exp_product(dt, a):
    """e^(dt a) for a real A (a broadcasting against dt): in fp32 on a GPU 2^(dt (a log2 e)) by one
    ex2.approx.ftz, a scaled once for all the steps it broadcasts over (as mamba-ssm scales A),
    not each product; results below 2^-126 (dt a below about -87.3) are 0 rather than subnormal,
    as Ā = exp(ΔA) there is in every other respect. Else tl.exp."""
    if _HARDWARE_EXP:
        if a.dtype == tl.float32:
            return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [dt * (a * 1.4426950408889634)],
                                             dtype=tl.float32, is_pure=True, pack=1)
        else:
            return tl.exp(dt * a)
    else:
        return tl.exp(dt * a)


@_triton_jit
def _cexp(ar, ai):
    """exp(a) = e^ar (cos ai + i sin ai) for a complex a, by tl.exp (by :func:`_exp_product`'s
    ex2.approx.ftz beside cos and sin, the complex kernels gain 1% of their instructions and the
    S5 forward with Δ and C per step spills)."""
    magnitude = tl.exp(ar)
    return magnitude * tl.cos(ai), magnitude * tl.sin(ai)


@_triton_jit
def _csum(xr, xi, axis: tl.constexpr, COMPLEX: tl.constexpr):
    """Σ x along axis."""
    if COMPLEX:
        return tl.sum(xr, axis), tl.sum(xi, axis)
    else:
        return tl.sum(xr, axis), 0.0


@_triton_jit
def _softplus(x):
    """log(1 + e^x), and x itself above 20 (the threshold of torch's softplus)."""
    stable = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
    return tl.where(x > 20.0, x, stable)


@_triton_jit
def _combine_real(a1, b1, a2, b2):
    """(a1, b1) • (a2, b2) = (a2 a1, a2 b1 + b2): step 1 then step 2 of h ↦ a h + b."""
    return a2 * a1, a2 * b1 + b2


@_triton_jit
def _combine_complex(a1r, a1i, b1r, b1i, a2r, a2i, b2r, b2i):
    """(a1, b1) • (a2, b2) = (a2 a1, a2 b1 + b2) for complex a, b."""
    ar = a2r * a1r - a2i * a1i
    ai = a2r * a1i + a2i * a1r
    br = a2r * b1r - a2i * b1i + b2r
    bi = a2r * b1i + a2i * b1r + b2i
    return ar, ai, br, bi


@_triton_jit
def _scan(a_re, a_im, b_re, b_im, REVERSE: tl.constexpr, COMPLEX: tl.constexpr):
    """Inclusive scan of the pairs (a_t, b_t) along axis 0.

    Forward: (Π_{s≤t} a_s, h_t) with h_t = a_t h_{t-1} + b_t, h_{-1} = 0.
    REVERSE: (Π_{s≥t} a_s, g_t) with g_t = a_t g_{t+1} + b_t, g past the end = 0.
    """
    if COMPLEX:
        return tl.associative_scan((a_re, a_im, b_re, b_im), 0, _combine_complex, reverse=REVERSE)
    else:
        a, b = tl.associative_scan((a_re, b_re), 0, _combine_real, reverse=REVERSE)
        return a, 0.0, b, 0.0


@_triton_jit
def _identity_outside(valid, a_re, a_im, b_re, b_im, COMPLEX: tl.constexpr):
    """(a, b) where valid, the identity step (1, 0) elsewhere (padding steps, channels, states)."""
    if COMPLEX:
        return (tl.where(valid, a_re, 1.0), tl.where(valid, a_im, 0.0),
                tl.where(valid, b_re, 0.0), tl.where(valid, b_im, 0.0))
    else:
        return tl.where(valid, a_re, 1.0), 0.0, tl.where(valid, b_re, 0.0), 0.0


@_triton_jit
def _row(x, rows, r):
    """x[r] along axis 0 (rows: the axis-0 index, broadcastable to x)."""
    return tl.sum(tl.where(rows == r, x, 0.0), 0)


@_triton_jit
def _crow(xr, xi, rows, r, COMPLEX: tl.constexpr):
    """x[r] along axis 0, complex."""
    if COMPLEX:
        return _row(xr, rows, r), _row(xi, rows, r)
    else:
        return _row(xr, rows, r), 0.0


@_triton_jit
def _shift_down(x, rows, first):
    """y[t] = x[t - 1] along axis 0, y[0] = first (x's shape without axis 0)."""
    source = tl.broadcast_to(tl.maximum(rows - 1, 0), x.shape)
    return tl.where(rows == 0, first, tl.gather(x, source, 0))


@_triton_jit
def _cshift_down(xr, xi, rows, fr, fi, COMPLEX: tl.constexpr):
    """Complex :func:`_shift_down`."""
    if COMPLEX:
        return _shift_down(xr, rows, fr), _shift_down(xi, rows, fi)
    else:
        return _shift_down(xr, rows, fr), 0.0


@_triton_jit
def _load_delta(delta_ptr, bias_ptr, step_offs, step_mask, channel_offs, channel_mask,
                PER_STEP: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(pre, Δ): pre = δ + bias, Δ = softplus(pre) or pre.

    A per-step δ is read at step_offs, a time-invariant (K,) δ and the bias at channel_offs
    (their shapes broadcast: (T, BLOCK_K) against (1, BLOCK_K) in the scans).
    """
    if PER_STEP:
        pre = _load(delta_ptr, step_offs, step_mask, 0.0)
    else:
        pre = _load(delta_ptr, channel_offs, channel_mask, 0.0)
    if HAS_BIAS:
        pre = pre + _load(bias_ptr, channel_offs, channel_mask, 0.0)
    if SOFTPLUS:
        return pre, _softplus(pre)
    else:
        return pre, pre


@_triton_jit
def _discretize(dt, a_re, a_im, METHOD: tl.constexpr, COMPLEX: tl.constexpr):
    """(Ā, F) for step Δ = dt (real) and A (broadcasting); formulas in the module docstring."""
    da_re, da_im = _cscale(a_re, a_im, dt, COMPLEX)
    if METHOD == "bilinear":
        # Ā = (1 + ΔA/2)/(1 - ΔA/2),  F = Δ/(1 - ΔA/2)
        inv_re, inv_im = _crecip(1.0 - 0.5 * da_re, -0.5 * da_im, COMPLEX)
        abar_re, abar_im = _cmul(1.0 + 0.5 * da_re, 0.5 * da_im, inv_re, inv_im, COMPLEX)
        f_re, f_im = _cscale(inv_re, inv_im, dt, COMPLEX)
    else:
        # Ā = exp(ΔA)
        if COMPLEX:
            abar_re, abar_im = _cexp(da_re, da_im)
        else:
            abar_re, abar_im = _exp_product(dt, a_re), 0.0
        if METHOD == "zoh":
            # F = (Ā - 1)/A
            f_re, f_im = _cdiv(abar_re - 1.0, abar_im, a_re, a_im, COMPLEX)
        else:
            # F = Δ
            f_re, f_im = dt, 0.0
    return abar_re, abar_im, f_re, f_im


@_triton_jit
def _discretize_grad(dt, a_re, a_im, abar_re, abar_im, f_re, f_im, ga_re, ga_im, gf_re, gf_im,
                     METHOD: tl.constexpr, COMPLEX: tl.constexpr):
    """(∂ℓ/∂Δ, ∂ℓ/∂A) per element from gF = ∂ℓ/∂F and ga (:func:`_transition_adjoint`): gĀ =
    ∂ℓ/∂Ā for bilinear, w = gĀ conj(Ā) for zoh and zoh_euler (PyTorch's convention).

    With Ā, F holomorphic in A and Δ real:  ∂ℓ/∂Δ = Re(gĀ conj(∂Ā/∂Δ) + gF conj(∂F/∂Δ)),
    ∂ℓ/∂A = gĀ conj(∂Ā/∂A) + gF conj(∂F/∂A), where
      zoh, zoh_euler: ∂Ā/∂Δ = A Ā, ∂Ā/∂A = Δ Ā; zoh: ∂F/∂Δ = Ā, ∂F/∂A = (Δ Ā - F)/A;
        zoh_euler: ∂F/∂Δ = 1, ∂F/∂A = 0;
      bilinear, r = 1/(1 - ΔA/2)²: ∂Ā/∂Δ = A r, ∂Ā/∂A = Δ r, ∂F/∂Δ = r, ∂F/∂A = Δ² r/2.
    """
    if METHOD == "bilinear":
        da_re, da_im = _cscale(a_re, a_im, dt, COMPLEX)
        inv_re, inv_im = _crecip(1.0 - 0.5 * da_re, -0.5 * da_im, COMPLEX)
        r_re, r_im = _cmul(inv_re, inv_im, inv_re, inv_im, COMPLEX)
        # ∂ℓ/∂Δ = Re((gĀ conj(A) + gF) conj(r))
        s_re, s_im = _cmul_conj(ga_re, ga_im, a_re, a_im, COMPLEX)
        g_dt = _re_mul_conj(s_re + gf_re, s_im + gf_im, r_re, r_im, COMPLEX)
        # ∂ℓ/∂A = (gĀ Δ + gF Δ²/2) conj(r)
        p_re, p_im = _cscale(ga_re, ga_im, dt, COMPLEX)
        q_re, q_im = _cscale(gf_re, gf_im, 0.5 * dt * dt, COMPLEX)
        ga_re, ga_im = _cmul_conj(p_re + q_re, p_im + q_im, r_re, r_im, COMPLEX)
    else:
        # w = ∂ℓ/∂(ΔA) = gĀ conj(Ā) = ga:  ∂ℓ/∂Δ ∋ Re(w conj(A)),  ∂ℓ/∂A ∋ w Δ
        g_dt = _re_mul_conj(ga_re, ga_im, a_re, a_im, COMPLEX)
        ga_re, ga_im = _cscale(ga_re, ga_im, dt, COMPLEX)
        if METHOD == "zoh":
            g_dt += _re_mul_conj(gf_re, gf_im, abar_re, abar_im, COMPLEX)
            dt_abar_re, dt_abar_im = _cscale(abar_re, abar_im, dt, COMPLEX)
            p_re, p_im = _cdiv(dt_abar_re - f_re, dt_abar_im - f_im, a_re, a_im, COMPLEX)
            gfa_re, gfa_im = _cmul_conj(gf_re, gf_im, p_re, p_im, COMPLEX)
            ga_re += gfa_re
            ga_im += gfa_im
        else:
            g_dt += gf_re
    return g_dt, ga_re, ga_im


# ---------------------------------------------------------------------------------------
# selective_scan kernels
# ---------------------------------------------------------------------------------------


@_triton_jit
def _chunk_states(abar_re, abar_im, x_re, x_im, h0_re, h0_im, COMPLEX: tl.constexpr):
    """States of one chunk: h_t = (Ā_{t0}···Ā_t) h_{t0-1} + (the chunk's recurrence from zero).
    Pairs (Ā_t, x_t) along axis 0; h0 = h_{t0-1} broadcasts over the chunk's steps."""
    prod_re, prod_im, hl_re, hl_im = _scan(abar_re, abar_im, x_re, x_im, False, COMPLEX)
    carry_re, carry_im = _cmul(prod_re, prod_im, h0_re, h0_im, COMPLEX)
    return hl_re + carry_re, hl_im + carry_im


@_triton_jit
def _chunk_adjoint(g_re, g_im, anext_re, anext_im, lam_re, lam_im, rows, COMPLEX: tl.constexpr):
    """λ_t of one chunk, and λ at its first step (the carry into the chunk before).

    λ_t = g_t + conj(Ā_{t+1}) λ_{t+1}, a reversed scan of the pairs (conj(Ā_{t+1}), g_t);
    g_t = ∂ℓ/∂h_t (direct) and anext = Ā_{t+1} (the next step's, recomputed: no shifted tile)
    along axis 0; lam = λ at the first step of the chunk after this one, broadcasting over the
    steps (zero after the last chunk, as is λ past L: g is zero there).
    """
    suffix_re, suffix_im, l_re, l_im = _scan(anext_re, -anext_im, g_re, g_im, True, COMPLEX)
    carry_re, carry_im = _cmul(suffix_re, suffix_im, lam_re, lam_im, COMPLEX)
    l_re += carry_re
    l_im += carry_im
    first_re, first_im = _crow(l_re, l_im, rows, 0, COMPLEX)
    return l_re, l_im, first_re, first_im


@_triton_jit
def _chunk_adjoint_flipped(g_re, g_im, anext_re, anext_im, lam_re, lam_im, rows, T: tl.constexpr,
                           COMPLEX: tl.constexpr, BY_GATHER: tl.constexpr):
    """:func:`_chunk_adjoint` from its inputs in reversed step order (row s holds step T-1-s):
    λ by a forward scan of the pairs (conj(Ā_{t+1}), g_t) from lam, then flipped back to step
    order (BY_GATHER: by ``tl.gather`` of rows T-1-s, one shuffle per value where the steps lie
    across one warp's lanes, for tl.flip's one per lane bit; real λ only); λ at the chunk's
    first step is the scan's last row."""
    l_re, l_im = _chunk_states(anext_re, -anext_im, g_re, g_im, lam_re, lam_im, COMPLEX)
    first_re, first_im = _crow(l_re, l_im, rows, T - 1, COMPLEX)
    if COMPLEX:
        return tl.flip(l_re, 0), tl.flip(l_im, 0), first_re, first_im
    elif BY_GATHER:
        return tl.gather(l_re, tl.broadcast_to(T - 1 - rows, l_re.shape), 0), 0.0, first_re, 0.0
    else:
        return tl.flip(l_re, 0), 0.0, first_re, 0.0


@_triton_jit
def _transition_adjoint(lam_re, lam_im, h_re, h_im, x_re, x_im, h0_re, h0_im, rows,
                        METHOD: tl.constexpr, COMPLEX: tl.constexpr):
    """What :func:`_discretize_grad` takes of ∂ℓ/∂Ā_t = λ_t conj(h_{t-1}) (along axis 0): with
    Ā = exp(ΔA), w = ∂ℓ/∂Ā_t conj(Ā_t) = λ_t conj(h_t - x_t), since Ā_t h_{t-1} = h_t - x_t (x_t
    = F_t B_t u_t: no shifted tile of states); bilinear, ∂ℓ/∂Ā_t itself, h_{t-1} by a one-row
    shift (h0 = h_{t0-1} enters at the first row)."""
    if METHOD == "bilinear":
        hp_re, hp_im = _cshift_down(h_re, h_im, rows, h0_re, h0_im, COMPLEX)
        return _cmul_conj(lam_re, lam_im, hp_re, hp_im, COMPLEX)
    else:
        return _cmul_conj(lam_re, lam_im, h_re - x_re, h_im - x_im, COMPLEX)


@_triton_jit
def _diagonal_pairs(u_ptr, delta_ptr, bias_ptr, tk, mask_tk, k, mask_k, a_re, a_im,
                    METHOD: tl.constexpr, COMPLEX: tl.constexpr, DELTA_PER_STEP: tl.constexpr,
                    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """One chunk's inputs of :func:`diagonal_scan`: u, δ + bias before softplus, Δ, F and the
    pairs (Ā_t, F_t u_t), identities outside ``mask_tk``; all (T, BLOCK_K)."""
    u_re, u_im = _load_complex(u_ptr, tk, mask_tk, 0.0, COMPLEX)
    pre, dt = _load_delta(delta_ptr, bias_ptr, tk, mask_tk, k[None, :], mask_k[None, :],
                          DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)
    abar_re, abar_im, f_re, f_im = _discretize(dt, a_re, a_im, METHOD, COMPLEX)
    x_re, x_im = _cmul(f_re, f_im, u_re, u_im, COMPLEX)
    pa_re, pa_im, x_re, x_im = _identity_outside(mask_tk, abar_re, abar_im, x_re, x_im, COMPLEX)
    return u_re, u_im, pre, dt, f_re, f_im, pa_re, pa_im, x_re, x_im


@_triton_jit
def _state_pairs(u, abar_re, abar_im, f_re, f_im, b_re, b_im, valid, COMPLEX: tl.constexpr, HAS_B: tl.constexpr):
    """One state j of BLOCK_K channels over one chunk of :func:`selective_scan`: F·B and the
    pairs (Ā_t, F_t B_t u_t), identities outside ``valid``; all (T, BLOCK_K). u, Ā, F: (T,
    BLOCK_K) (:func:`_discretize`); b = B_t[j]: (T, 1), unused without B."""
    if HAS_B:  # B ≡ 1 when absent
        fb_re, fb_im = _cmul(f_re, f_im, b_re, b_im, COMPLEX)
    else:
        fb_re, fb_im = f_re, f_im
    x_re, x_im = _cscale(fb_re, fb_im, u, COMPLEX)
    pa_re, pa_im, x_re, x_im = _identity_outside(valid, abar_re, abar_im, x_re, x_im, COMPLEX)
    return fb_re, fb_im, pa_re, pa_im, x_re, x_im


@_triton_jit
def _put_row(x, rows, r, value):
    """x with row r (along axis 0) replaced by value (x's shape without axis 0)."""
    return tl.where(rows == r, value[None, :], x)


@_triton_jit
def _cput_row(xr, xi, rows, r, vr, vi, COMPLEX: tl.constexpr):
    """Complex :func:`_put_row`."""
    if COMPLEX:
        return _put_row(xr, rows, r, vr), _put_row(xi, rows, r, vi)
    else:
        return _put_row(xr, rows, r, vr), 0.0


@_triton_jit
def _offset(ptr, elements, COMPLEX: tl.constexpr):
    """ptr advanced by ``elements`` elements of a tensor that is complex (two planes) or real."""
    if COMPLEX:
        return ptr + 2 * elements
    else:
        return ptr + elements


@_triton_jit
def _add_row(x, rows, r, value):
    """x with value added to its row r (along axis 0; value has x's shape without axis 0)."""
    return x + tl.where(rows == r, value[None, :], 0.0)


@_triton_jit
def _cadd_row(xr, xi, rows, r, vr, vi, COMPLEX: tl.constexpr):
    """Complex :func:`_add_row`."""
    if COMPLEX:
        return _add_row(xr, rows, r, vr), _add_row(xi, rows, r, vi)
    else:
        return _add_row(xr, rows, r, vr), 0.0


@_triton_jit
def _crow_vector(xr, xi, COMPLEX: tl.constexpr):
    """A complex (BLOCK_K,) vector as a (1, BLOCK_K) row, broadcasting against (T, BLOCK_K)."""
    if COMPLEX:
        return xr[None, :], xi[None, :]
    else:
        return xr[None, :], 0.0


@_triton_jit
def _state_A(A_ptr, k, mask_k, j, N, COMPLEX: tl.constexpr):
    """A[k, j] of state j for the program's channels, as a (1, BLOCK_K) row (-1 past K keeps the
    padding finite)."""
    a_re, a_im = _load_complex(A_ptr, k * N + j, mask_k, -1.0, COMPLEX)
    return _crow_vector(a_re, a_im, COMPLEX)


@_triton_jit
def _state_C(C_ptr, tj, mask_t, k, mask_k, j, N, C_SHARED: tl.constexpr, COMPLEX: tl.constexpr):
    """C of state j: a shared C_t[j] at tj, a (T, 1) column, or a fixed C[k, j], a (1, BLOCK_K) row."""
    if C_SHARED:
        return _load_complex(C_ptr, tj, mask_t, 0.0, COMPLEX)
    else:
        return _load_complex(C_ptr, k[None, :] * N + j, mask_k[None, :], 0.0, COMPLEX)


@_triton_jit
def _state_B(B_ptr, tj, mask_t, HAS_B: tl.constexpr, COMPLEX: tl.constexpr):
    """B_t[j] of state j at tj (T, 1) where mask_t (T, 1); 0 without B (then unused)."""
    if HAS_B:
        return _load_complex(B_ptr, tj, mask_t, 0.0, COMPLEX)
    else:
        return 0.0, 0.0


@_triton_jit
def _state_h0(states_ptr, slot, j, k, mask_k, K, N, COMPLEX: tl.constexpr):
    """h_{t0-1}[j], the state j entering a chunk, from slot ``slot`` of the (·, N, K) states: a
    (1, BLOCK_K) row."""
    h0_re, h0_im = _load_complex(states_ptr, (slot * N + j) * K + k, mask_k, 0.0, COMPLEX)
    return _crow_vector(h0_re, h0_im, COMPLEX)


@_triton_jit
def _state_inputs(A_ptr, B_ptr, C_ptr, states_ptr, j, slot, t, mask_t, k, mask_k, L, K, N,
                  HAS_B: tl.constexpr, C_SHARED: tl.constexpr, COMPLEX: tl.constexpr):
    """Everything state j reads over a chunk of steps t (T,) for the program's channels k, in
    one place (PREFETCH): A[k, j] (:func:`_state_A`), the state entering the chunk
    (:func:`_state_h0`), B_t[j] (:func:`_state_B`), C (:func:`_state_C`)."""
    tj = j * L + t[:, None]  # state j's steps are adjacent in B and C, (Bt, N, L)
    a_re, a_im = _state_A(A_ptr, k, mask_k, j, N, COMPLEX)
    h0_re, h0_im = _state_h0(states_ptr, slot, j, k, mask_k, K, N, COMPLEX)
    b_re, b_im = _state_B(B_ptr, tj, mask_t, HAS_B, COMPLEX)
    c_re, c_im = _state_C(C_ptr, tj, mask_t, k, mask_k, j, N, C_SHARED, COMPLEX)
    return a_re, a_im, h0_re, h0_im, b_re, b_im, c_re, c_im


@_triton_jit
def _sum_slice(ptr, pid_k, batch, L, N, ATOMIC_SUMS: tl.constexpr, COMPLEX: tl.constexpr):
    """ptr at the (N, L) slice a program's gradient of a shared B or C goes to: the batch
    element's own, which every channel block adds into (ATOMIC_SUMS), or the block's own of
    (⌈K/BLOCK_K⌉, Bt, N, L), summed by torch afterwards."""
    if ATOMIC_SUMS:
        return _offset(ptr, batch * L * N, COMPLEX)
    else:
        return _offset(ptr, (pid_k * tl.num_programs(1) + batch) * L * N, COMPLEX)


@_triton_jit
def _put_sum(ptr, offs, re, im, mask, ATOMIC_SUMS: tl.constexpr, COMPLEX: tl.constexpr):
    """Writes a block's sum over its channels into its slice (:func:`_sum_slice`): added
    atomically to what the other blocks add (ATOMIC_SUMS), or stored."""
    if ATOMIC_SUMS:
        if COMPLEX:
            tl.atomic_add(ptr + 2 * offs, re, mask=mask, sem="relaxed")
            tl.atomic_add(ptr + 2 * offs + 1, im, mask=mask, sem="relaxed")
        else:
            tl.atomic_add(ptr + offs, re, mask=mask, sem="relaxed")
    else:
        _store_complex(ptr, offs, re, im, mask, COMPLEX)


@_triton_jit
def _within(i, n, EVEN: tl.constexpr):
    """i < n for a 1-D index; with EVEN known true, a constant the compiler folds away (with the
    selects and predicates of every masked load, store and identity it guards)."""
    if EVEN:
        return tl.full(i.shape, 1, tl.int1)
    else:
        return i < n


@_triton_jit
def _step_offsets(t, k, L, K, CHANNELS_FIRST: tl.constexpr):
    """(T, BLOCK_K) offsets of steps t and channels k in a batch element of a per-step tensor:
    (L, K), or (K, L) when CHANNELS_FIRST (a channel's steps adjacent, mamba-ssm's layout)."""
    if CHANNELS_FIRST:
        return t[:, None] + k[None, :] * L
    else:
        return t[:, None] * K + k[None, :]


@_triton_jit
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, scale_ptr, out_ptr, states_ptr,
    L, K, N,
    METHOD: tl.constexpr, COMPLEX: tl.constexpr, DELTA_PER_STEP: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_B: tl.constexpr, C_SHARED: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, SAVE_STATES: tl.constexpr, T: tl.constexpr, BLOCK_K: tl.constexpr,
    CHANNELS_FIRST: tl.constexpr, T_STATES: tl.constexpr, EVEN: tl.constexpr, PREFETCH: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """out of :func:`selective_scan` for channel block program_id(0) and batch program_id(1)
    (consecutive programs take neighbouring channels of one batch element, which share B and C).

    u, δ (per step), z, out: (Bt, L, K), or (Bt, K, L) when CHANNELS_FIRST; B, C (shared):
    (Bt, N, L), state-major; A, C (fixed):
    (K, N); δ (time-invariant), bias, D: (K,); scale: (1,); states: (Bt, ⌈L/T_STATES⌉, N, K),
    the state entering every T_STATES steps (written when SAVE_STATES; T_STATES divides T: the
    backward's chunk), or without SAVE_STATES a two-slot scratch (Bt, 2, N, K) that passes the
    state entering each chunk. Complex tensors are their (..., 2) views.
    A, D, bias, a (K,) δ or C, scale and the states have A's real dtype (fp32 or fp64), the
    accumulation dtype; each (Bt, L, ·) tensor may be bf16 or fp16 instead of fp32 (read in
    its dtype, widened in registers; out is written in out's dtype). EVEN: L a multiple of T and
    K of BLOCK_K (:func:`_even`), so that no step or channel needs a mask. PREFETCH: each state's
    loads (A, the entering state, B_t, C_t) issued one state ahead, before the previous
    state's arithmetic, so that their latency overlaps it (:func:`_state_inputs`). UNROLL: the
    loop over states unrolled by this factor (1: not), so that the compiler may interleave the
    independent work of neighbouring states.
    """
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    steps = tl.arange(0, T)
    rows = steps[:, None]
    mask_k = _within(k, K, EVEN)
    n_chunks = tl.cdiv(L, T)
    # this batch element's slices (64-bit offsets once; offsets inside a slice are 32-bit)
    batch = tl.program_id(1).to(tl.int64)
    u_ptr += batch * L * K
    z_ptr += batch * L * K
    out_ptr += batch * L * K
    if DELTA_PER_STEP:
        delta_ptr += batch * L * K
    B_ptr = _offset(B_ptr, batch * L * N, COMPLEX)
    if C_SHARED:
        C_ptr = _offset(C_ptr, batch * L * N, COMPLEX)
    slots = tl.cdiv(L, T_STATES) if SAVE_STATES else 2  # of the states (below) per batch element
    states_ptr = _offset(states_ptr, batch * slots * K * N, COMPLEX)
    scale = tl.load(scale_ptr)
    dtype = A_ptr.dtype.element_ty  # the accumulation dtype: fp32 (for bf16/fp16 inputs too) or fp64
    if HAS_D:
        d = tl.load(D_ptr + k, mask=mask_k, other=0.0)

    # the state entering chunk c goes through memory: the states kept for the backward
    # (SAVE_STATES; slot s holds the state entering step s T_STATES), or a two-slot scratch,
    # slot c % 2; the host zeroes slot 0
    for chunk in range(0, n_chunks):
        t = chunk * T + steps
        if SAVE_STATES and T_STATES < T:  # written by the threads holding the last step of each T_STATES steps
            slot = (chunk * T) // T_STATES
            ends = ((t + 1) % T_STATES == 0)[:, None] & (t[:, None] + 1 < L) & mask_k[None, :]
            after = ((t + 1) // T_STATES)[:, None]
        else:  # written by the threads holding the chunk's last step (as the form above would at
            # T_STATES == T, in fewer registers: 114 against 134 in the Mamba LTI forward, bf16 aligned, triton 3.9)
            slot = chunk if SAVE_STATES else chunk % 2
            ends = (rows == T - 1) & (t[:, None] + 1 < L) & mask_k[None, :]
            after = (chunk + 1 if SAVE_STATES else (chunk + 1) % 2) + 0 * rows
        mask_t = _within(t, L, EVEN)[:, None]
        mask_tk = mask_t & mask_k[None, :]
        tk = _step_offsets(t, k, L, K, CHANNELS_FIRST)
        u = _load(u_ptr, tk, mask_tk, 0.0)
        dt = _load_delta(delta_ptr, bias_ptr, tk, mask_tk, k[None, :], mask_k[None, :],
                         DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)[1]
        y = tl.zeros((T, BLOCK_K), dtype)
        # h_{t0-1}[j], the state entering the chunk: what the chunk before stored (every thread
        # reads it), zero before the first
        if PREFETCH:
            a_re, a_im, h0_re, h0_im, b_re, b_im, c_re, c_im = _state_inputs(
                A_ptr, B_ptr, C_ptr, states_ptr, 0, slot, t, mask_t, k, mask_k, L, K, N, HAS_B, C_SHARED, COMPLEX)
        for j in tl.range(0, N, loop_unroll_factor=UNROLL):
            if PREFETCH:  # state j + 1's loads before state j's arithmetic (after the last, state 0's again)
                na_re, na_im, nh0_re, nh0_im, nb_re, nb_im, nc_re, nc_im = _state_inputs(
                    A_ptr, B_ptr, C_ptr, states_ptr, (j + 1) % N, slot, t, mask_t, k, mask_k, L, K, N,
                    HAS_B, C_SHARED, COMPLEX)
            else:  # each where it is first used
                tj = j * L + t[:, None]  # state j's steps are adjacent in B and C, (Bt, N, L)
                a_re, a_im = _state_A(A_ptr, k, mask_k, j, N, COMPLEX)
                h0_re, h0_im = _state_h0(states_ptr, slot, j, k, mask_k, K, N, COMPLEX)
            abar_re, abar_im, f_re, f_im = _discretize(dt, a_re, a_im, METHOD, COMPLEX)
            if not PREFETCH:
                b_re, b_im = _state_B(B_ptr, tj, mask_t, HAS_B, COMPLEX)
            _, _, abar_re, abar_im, x_re, x_im = _state_pairs(u, abar_re, abar_im, f_re, f_im, b_re, b_im, mask_tk,
                                                              COMPLEX, HAS_B)
            hc_re, hc_im = _chunk_states(abar_re, abar_im, x_re, x_im, h0_re, h0_im, COMPLEX)
            # y_t += Re C_t[j] h_t[j]
            if not PREFETCH:
                c_re, c_im = _state_C(C_ptr, tj, mask_t, k, mask_k, j, N, C_SHARED, COMPLEX)
            y += _re_mul(c_re, c_im, hc_re, hc_im, COMPLEX)
            # the states entering the next chunk (and every T_STATES steps), where a step follows
            _store_complex(states_ptr, (after * N + j) * K + k[None, :], hc_re, hc_im, ends, COMPLEX)
            if PREFETCH:
                a_re, a_im, h0_re, h0_im = na_re, na_im, nh0_re, nh0_im
                b_re, b_im, c_re, c_im = nb_re, nb_im, nc_re, nc_im
        tl.debug_barrier()  # every thread's stores of this chunk's states before the next chunk's reads

        # y_t = scale · Re Σ_j C_t h_t + D u_t,   out_t = y_t silu(z_t)
        y = scale * y
        if HAS_D:
            y += d[None, :] * u
        if HAS_Z:
            zt = _load(z_ptr, tk, mask_tk, 0.0)
            y = y * zt * tl.sigmoid(zt)
        _store(out_ptr, tk, y, mask_tk)


@_triton_jit
def _selective_scan_bwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, scale_ptr, states_ptr, dout_ptr,
    du_ptr, dpre_ptr, dsum_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr,
    L, K, N,
    METHOD: tl.constexpr, COMPLEX: tl.constexpr, DELTA_PER_STEP: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_B: tl.constexpr, C_SHARED: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    CHANNELS_FIRST: tl.constexpr, ATOMIC_SUMS: tl.constexpr, FLIP_ADJOINT: tl.constexpr, EVEN: tl.constexpr,
    PREFETCH: tl.constexpr, UNROLL: tl.constexpr, FLIP_GATHER: tl.constexpr,
):
    """Gradients of :func:`selective_scan` for channel block program_id(0) and batch program_id(1).

    Inputs as the forward kernel, with its states and dout (Bt, L, K). Writes du, dz:
    (Bt, L, K); dpre = ∂ℓ/∂(δ + bias): (Bt, L, K) for a per-step δ (each of these (Bt, K, L)
    when CHANNELS_FIRST); dsum = its partial sums over time (Bt, K) for a (K,) δ, or a bias
    with a bf16/fp16 dpre (SUM_DPRE); partial sums dA: (Bt, K, N) and dD: (Bt, K); dB, and dC
    when shared: (⌈K/BLOCK_K⌉, Bt, N, L), one slice per channel block, or with ATOMIC_SUMS
    (Bt, N, L), zeroed, every block adding into it atomically; dC fixed: (Bt, K, N). du, dz,
    dpre in their inputs' dtypes, the partial sums in A's (fp32 or fp64). FLIP_ADJOINT: the
    adjoint's reversed scan as a forward scan of its inputs read in reversed step order, λ
    flipped back (:data:`_FLIP_ADJOINT`), by a gather with FLIP_GATHER (:func:`flip_gather`).
    EVEN, PREFETCH, UNROLL: as the forward's (PREFETCH: with C_t at the adjoint's steps too).
    """
    pid_k = tl.program_id(0)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    steps = tl.arange(0, T)
    rows = steps[:, None]
    held = tl.arange(0, BLOCK_N)[:, None]  # row j of the per-state tiles below is state j
    mask_k = _within(k, K, EVEN)
    n_chunks = tl.cdiv(L, T)
    # this batch element's slices (64-bit offsets once; offsets inside a slice are 32-bit)
    batch = tl.program_id(1).to(tl.int64)
    u_ptr += batch * L * K
    z_ptr += batch * L * K
    dout_ptr += batch * L * K
    du_ptr += batch * L * K
    dz_ptr += batch * L * K
    if DELTA_PER_STEP:
        delta_ptr += batch * L * K
        dpre_ptr += batch * L * K
    B_ptr = _offset(B_ptr, batch * L * N, COMPLEX)
    dB_ptr = _sum_slice(dB_ptr, pid_k, batch, L, N, ATOMIC_SUMS, COMPLEX)
    if C_SHARED:
        C_ptr = _offset(C_ptr, batch * L * N, COMPLEX)
        dC_ptr = _sum_slice(dC_ptr, pid_k, batch, L, N, ATOMIC_SUMS, COMPLEX)
    else:
        dC_ptr = _offset(dC_ptr, batch * K * N, COMPLEX)
    states_ptr = _offset(states_ptr, batch * n_chunks * K * N, COMPLEX)
    dA_ptr = _offset(dA_ptr, batch * K * N, COMPLEX)
    dD_ptr += batch * K
    dsum_ptr += batch * K
    scale = tl.load(scale_ptr)
    dtype = A_ptr.dtype.element_ty  # the accumulation dtype: fp32 (for bf16/fp16 inputs too) or fp64

    # Σ over the chunks seen so far of ∂ℓ/∂A and (fixed C) ∂ℓ/∂C: (BLOCK_N, BLOCK_K)
    dA_re = tl.zeros((BLOCK_N, BLOCK_K), dtype)
    dA_im = tl.zeros((BLOCK_N, BLOCK_K), dtype) if COMPLEX else 0.0
    if not C_SHARED:
        dC_re = tl.zeros((BLOCK_N, BLOCK_K), dtype)
        dC_im = tl.zeros((BLOCK_N, BLOCK_K), dtype) if COMPLEX else 0.0
    if HAS_D:
        d = tl.load(D_ptr + k, mask=mask_k, other=0.0)
        dD = tl.zeros((BLOCK_K,), dtype)
    # Σ_t dpre at A's precision: ∂ℓ/∂δ for a (K,) δ; ∂ℓ/∂bias when dpre is written in bf16 or
    # fp16 (from an fp32 dpre torch sums it after the kernel, which costs no registers here)
    SUM_DPRE: tl.constexpr = (not DELTA_PER_STEP) or (HAS_BIAS and dpre_ptr.dtype.element_ty.primitive_bitwidth < 32)
    if SUM_DPRE:
        dpre_sum = tl.zeros((BLOCK_K,), dtype)
    ADJOINT_C: tl.constexpr = FLIP_ADJOINT and C_SHARED  # C_t[j] read at the adjoint's steps too
    # λ at the first step of the chunk after the current one, per state: (BLOCK_N, BLOCK_K)
    lam1_re = tl.zeros((BLOCK_N, BLOCK_K), dtype)
    lam1_im = tl.zeros((BLOCK_N, BLOCK_K), dtype) if COMPLEX else 0.0

    for i in range(0, n_chunks):
        chunk = n_chunks - 1 - i
        t = chunk * T + steps
        in_range = _within(t, L, EVEN)
        mask_t = in_range[:, None]
        mask_tk = mask_t & mask_k[None, :]
        tk = _step_offsets(t, k, L, K, CHANNELS_FIRST)
        u = _load(u_ptr, tk, mask_tk, 0.0)
        pre, dt = _load_delta(delta_ptr, bias_ptr, tk, mask_tk, k[None, :], mask_k[None, :],
                              DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)
        # the adjoint's steps: t, or with FLIP_ADJOINT t reversed (row s holds step t0 + T-1-s)
        t_adj = chunk * T + (T - 1) - steps if FLIP_ADJOINT else t
        mask_adj = _within(t_adj, L, EVEN)[:, None] if FLIP_ADJOINT else mask_t
        if DELTA_PER_STEP:  # Δ_{t+1}, for the adjoint's Ā_{t+1} (a cache hit but for one step)
            mask_next = (t_adj + 1 < L)[:, None] & mask_k[None, :]
            dt_next = _load_delta(delta_ptr, bias_ptr, _step_offsets(t_adj + 1, k, L, K, CHANNELS_FIRST), mask_next,
                                  k[None, :], mask_k[None, :], DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)[1]
        # out = y silu(z):  ∂ℓ/∂y = dout · silu(z)
        dy = _load(dout_ptr, tk, mask_tk, 0.0)
        if HAS_Z:
            zt = _load(z_ptr, tk, mask_tk, 0.0)
            dy = dy * zt * tl.sigmoid(zt)
            y = tl.zeros((T, BLOCK_K), dtype)  # Σ_j Re C h, for ∂ℓ/∂z after the loop
        du = tl.zeros((T, BLOCK_K), dtype)
        if HAS_D:
            dD += tl.sum(dy * u, 0)
            du = dy * d[None, :]
        gy = scale * dy
        gy_adj = tl.flip(gy, 0) if FLIP_ADJOINT else gy  # at the adjoint's steps
        g_dt = tl.zeros((T, BLOCK_K), dtype)  # Σ_j ∂ℓ/∂Δ
        # where the pairs are identities: outside L and K; with FLIP_ADJOINT and a time-invariant Δ
        # outside K only, so that Ā_t's rows are Ā_{t+1}'s in the reversed order too (past L, x = 0
        # and λ = 0: what Ā is there changes no gradient)
        valid = tl.broadcast_to(mask_k[None, :], (T, BLOCK_K)) if FLIP_ADJOINT and not DELTA_PER_STEP else mask_tk

        # state j's inputs (:func:`_state_inputs`), and C_t[j] at the adjoint's steps where they are reversed
        if PREFETCH:
            a_re, a_im, h0_re, h0_im, b_re, b_im, c_re, c_im = _state_inputs(
                A_ptr, B_ptr, C_ptr, states_ptr, 0, chunk, t, mask_t, k, mask_k, L, K, N, HAS_B, C_SHARED, COMPLEX)
            if ADJOINT_C:
                ca_re, ca_im = _load_complex(C_ptr, t_adj[:, None], mask_adj, 0.0, COMPLEX)
        for j in tl.range(0, N, loop_unroll_factor=UNROLL):
            if PREFETCH:  # state j + 1's loads before state j's arithmetic (after the last, state 0's again)
                na_re, na_im, nh0_re, nh0_im, nb_re, nb_im, nc_re, nc_im = _state_inputs(
                    A_ptr, B_ptr, C_ptr, states_ptr, (j + 1) % N, chunk, t, mask_t, k, mask_k, L, K, N,
                    HAS_B, C_SHARED, COMPLEX)
                if ADJOINT_C:
                    nca_re, nca_im = _load_complex(C_ptr, ((j + 1) % N) * L + t_adj[:, None], mask_adj, 0.0, COMPLEX)
            tj = j * L + t[:, None]  # state j's steps are adjacent in B and C, (Bt, N, L)
            if not PREFETCH:  # each where it is first used
                a_re, a_im = _state_A(A_ptr, k, mask_k, j, N, COMPLEX)
            # recompute state j over the chunk: Ā_t, F_t B_t u_t and h_t
            abar_re, abar_im, f_re, f_im = _discretize(dt, a_re, a_im, METHOD, COMPLEX)
            if not PREFETCH:
                b_re, b_im = _state_B(B_ptr, tj, mask_t, HAS_B, COMPLEX)
            fb_re, fb_im, abar_re, abar_im, x_re, x_im = _state_pairs(u, abar_re, abar_im, f_re, f_im, b_re, b_im,
                                                                      valid, COMPLEX, HAS_B)
            if not PREFETCH:
                h0_re, h0_im = _state_h0(states_ptr, chunk, j, k, mask_k, K, N, COMPLEX)
            h_re, h_im = _chunk_states(abar_re, abar_im, x_re, x_im, h0_re, h0_im, COMPLEX)

            # readout y = scale Re Σ_j C h + D u:  direct ∂ℓ/∂h_t = scale dy conj(C_t),  ∂ℓ/∂C_t = scale dy conj(h_t)
            if not PREFETCH:
                c_re, c_im = _state_C(C_ptr, tj, mask_t, k, mask_k, j, N, C_SHARED, COMPLEX)
            if HAS_Z:
                y += _re_mul(c_re, c_im, h_re, h_im, COMPLEX)
            gc_re, gc_im = _cscale(h_re, -h_im, gy, COMPLEX)
            if C_SHARED:
                gc_re, gc_im = _csum(gc_re, gc_im, 1, COMPLEX)
                _put_sum(dC_ptr, j * L + t, gc_re, gc_im, in_range, ATOMIC_SUMS, COMPLEX)
            else:
                gc_re, gc_im = _csum(gc_re, gc_im, 0, COMPLEX)
                dC_re, dC_im = _cadd_row(dC_re, dC_im, held, j, gc_re, gc_im, COMPLEX)

            # adjoint: λ_t = g_t + conj(Ā_{t+1}) λ_{t+1}  (reversed scan), g_t = scale dy conj(C_t)
            if ADJOINT_C:
                if not PREFETCH:
                    ca_re, ca_im = _load_complex(C_ptr, j * L + t_adj[:, None], mask_adj, 0.0, COMPLEX)
                g_re, g_im = _cscale(ca_re, -ca_im, gy_adj, COMPLEX)
            else:
                g_re, g_im = _cscale(c_re, -c_im, gy_adj, COMPLEX)
            if DELTA_PER_STEP:
                anext_re, anext_im, _, _ = _discretize(dt_next, a_re, a_im, METHOD, COMPLEX)
            else:  # a time-invariant Ā: every row of a channel the same (with FLIP_ADJOINT, see valid)
                anext_re, anext_im = abar_re, abar_im
            l1_re, l1_im = _crow(lam1_re, lam1_im, held, j, COMPLEX)
            l1_re, l1_im = _crow_vector(l1_re, l1_im, COMPLEX)
            if FLIP_ADJOINT:
                lam_re, lam_im, first_re, first_im = _chunk_adjoint_flipped(g_re, g_im, anext_re, anext_im, l1_re,
                                                                            l1_im, rows, T, COMPLEX, FLIP_GATHER)
            else:
                lam_re, lam_im, first_re, first_im = _chunk_adjoint(g_re, g_im, anext_re, anext_im, l1_re, l1_im,
                                                                    rows, COMPLEX)
            lam1_re, lam1_im = _cput_row(lam1_re, lam1_im, held, j, first_re, first_im, COMPLEX)

            # ∂ℓ/∂(F B u)_t = λ_t:  ∂ℓ/∂u = Re Σ_j λ conj(F B),  ∂ℓ/∂F = λ conj(B) u,  ∂ℓ/∂B = Σ_k λ conj(F) u
            du += _re_mul_conj(lam_re, lam_im, fb_re, fb_im, COMPLEX)
            if HAS_B:
                if not PREFETCH:  # read again (a cache hit) rather than held through the scans
                    b_re, b_im = _load_complex(B_ptr, tj, mask_t, 0.0, COMPLEX)
                gf_re, gf_im = _cmul_conj(lam_re, lam_im, b_re, b_im, COMPLEX)
                gb_re, gb_im = _cmul_conj(lam_re, lam_im, f_re, f_im, COMPLEX)
                gb_re, gb_im = _cscale(gb_re, gb_im, u, COMPLEX)
                gb_re, gb_im = _csum(gb_re, gb_im, 1, COMPLEX)
                _put_sum(dB_ptr, j * L + t, gb_re, gb_im, in_range, ATOMIC_SUMS, COMPLEX)
            else:
                gf_re, gf_im = lam_re, lam_im
            gf_re, gf_im = _cscale(gf_re, gf_im, u, COMPLEX)
            # ∂ℓ/∂Ā_t = λ_t conj(h_{t-1})
            gt_re, gt_im = _transition_adjoint(lam_re, lam_im, h_re, h_im, x_re, x_im, h0_re, h0_im, rows,
                                               METHOD, COMPLEX)
            gdt_j, ga_re, ga_im = _discretize_grad(dt, a_re, a_im, abar_re, abar_im, f_re, f_im,
                                                   gt_re, gt_im, gf_re, gf_im, METHOD, COMPLEX)
            g_dt += gdt_j
            ga_re, ga_im = _csum(ga_re, ga_im, 0, COMPLEX)
            dA_re, dA_im = _cadd_row(dA_re, dA_im, held, j, ga_re, ga_im, COMPLEX)
            if PREFETCH:
                a_re, a_im, h0_re, h0_im = na_re, na_im, nh0_re, nh0_im
                b_re, b_im, c_re, c_im = nb_re, nb_im, nc_re, nc_im
                if ADJOINT_C:
                    ca_re, ca_im = nca_re, nca_im

        if HAS_Z:
            # ∂ℓ/∂z = dout · y · σ(z)(1 + z(1 - σ(z)))   (dout and z re-read: cache hits)
            y = scale * y
            if HAS_D:
                y += d[None, :] * u
            zt = _load(z_ptr, tk, mask_tk, 0.0)
            sig = tl.sigmoid(zt)
            _store(dz_ptr, tk, _load(dout_ptr, tk, mask_tk, 0.0) * y * sig * (1.0 + zt * (1.0 - sig)), mask_tk)
        _store(du_ptr, tk, du, mask_tk)
        dpre = g_dt
        if SOFTPLUS:
            dpre = dpre * tl.sigmoid(pre)
        if DELTA_PER_STEP:
            _store(dpre_ptr, tk, dpre, mask_tk)
        if SUM_DPRE:
            dpre_sum += tl.sum(tl.where(mask_tk, dpre, 0.0), 0)

    kn = k[None, :] * N + held  # (BLOCK_N, BLOCK_K)
    mask_kn = mask_k[None, :] & (held < N)
    _store_complex(dA_ptr, kn, dA_re, dA_im, mask_kn, COMPLEX)
    if HAS_D:
        tl.store(dD_ptr + k, dD, mask=mask_k)
    if SUM_DPRE:
        tl.store(dsum_ptr + k, dpre_sum, mask=mask_k)
    if not C_SHARED:
        _store_complex(dC_ptr, kn, dC_re, dC_im, mask_kn, COMPLEX)


@_triton_jit
def _selective_step_kernel(
    h_ptr, u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, scale_ptr, y_ptr, h_out_ptr,
    K, N,
    METHOD: tl.constexpr, COMPLEX: tl.constexpr, DELTA_PER_STEP: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_B: tl.constexpr, C_SHARED: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One step of :func:`selective_scan` from state h, for one (batch, channel block).

    h, h_out: (Bt, K, N); u, z, y, δ (per batch element): (Bt, K); B, C (shared): (Bt, N);
    A, C (fixed): (K, N); δ (time-invariant), bias, D: (K,); scale: (1,).
      h_out = Ā h + F B u,   y = scale · Re Σ_j C h_out + D u,   y ← y silu(z)
    """
    pid_b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    j = tl.arange(0, BLOCK_N)
    mask_k = k < K
    mask_n = j < N
    mask_kn = mask_k[:, None] & mask_n[None, :]
    kn = k[:, None] * N + j[None, :]
    bk = pid_b * K + k

    a_re, a_im = _load_complex(A_ptr, kn, mask_kn, -1.0, COMPLEX)
    h_re, h_im = _load_complex(h_ptr, pid_b * K * N + kn, mask_kn, 0.0, COMPLEX)
    u = _load(u_ptr, bk, mask_k, 0.0)
    _, dt = _load_delta(delta_ptr, bias_ptr, bk, mask_k, k, mask_k, DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)
    abar_re, abar_im, f_re, f_im = _discretize(dt[:, None], a_re, a_im, METHOD, COMPLEX)
    if HAS_B:
        b_re, b_im = _load_complex(B_ptr, pid_b * N + j, mask_n, 0.0, COMPLEX)
        f_re, f_im = _cmul(f_re, f_im, b_re, b_im, COMPLEX)
    x_re, x_im = _cscale(f_re, f_im, u[:, None], COMPLEX)
    ah_re, ah_im = _cmul(abar_re, abar_im, h_re, h_im, COMPLEX)
    h_re = ah_re + x_re
    h_im = ah_im + x_im
    _store_complex(h_out_ptr, pid_b * K * N + kn, h_re, h_im, mask_kn, COMPLEX)

    if C_SHARED:
        c_re, c_im = _load_complex(C_ptr, pid_b * N + j, mask_n, 0.0, COMPLEX)
    else:
        c_re, c_im = _load_complex(C_ptr, kn, mask_kn, 0.0, COMPLEX)
    y = tl.load(scale_ptr) * tl.sum(_re_mul(c_re, c_im, h_re, h_im, COMPLEX), 1)
    if HAS_D:
        y += tl.load(D_ptr + k, mask=mask_k, other=0.0) * u
    if HAS_Z:
        zt = _load(z_ptr, bk, mask_k, 0.0)
        y = y * zt * tl.sigmoid(zt)
    _store(y_ptr, bk, y, mask_k)


# ---------------------------------------------------------------------------------------
# diagonal_scan kernels
# ---------------------------------------------------------------------------------------


@_triton_jit
def _diagonal_scan_fwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, gain_ptr, out_ptr, states_ptr,
    L, K,
    METHOD: tl.constexpr, COMPLEX: tl.constexpr, DELTA_PER_STEP: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_GAIN: tl.constexpr, SAVE_STATES: tl.constexpr, T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """g of :func:`diagonal_scan` for batch program_id(0) and channel block program_id(1).

    u, out: (Bt, L, K), complex with A; δ (per step), gain: (Bt, L, K) real; A, bias,
    δ (time-invariant): (K,); states: (Bt, ⌈L/T⌉, K), the state entering each chunk.
      h_t = Ā_t h_{t-1} + F_t u_t,   g_t = gain_t h_t
    """
    pid_b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    steps = tl.arange(0, T)
    rows = steps[:, None]
    mask_k = k < K
    n_chunks = tl.cdiv(L, T)
    dtype = A_ptr.dtype.element_ty  # the accumulation dtype: fp32 (for bf16/fp16 inputs too) or fp64

    a_re, a_im = _load_complex(A_ptr, k, mask_k, -1.0, COMPLEX)
    h_re = tl.zeros((BLOCK_K,), dtype)
    h_im = tl.zeros((BLOCK_K,), dtype) if COMPLEX else 0.0
    for chunk in range(0, n_chunks):
        if SAVE_STATES:
            _store_complex(states_ptr, (pid_b * n_chunks + chunk) * K + k, h_re, h_im, mask_k, COMPLEX)
        t = chunk * T + steps
        mask_tk = (t < L)[:, None] & mask_k[None, :]
        tk = pid_b * L * K + t[:, None] * K + k[None, :]

        _, _, _, _, _, _, abar_re, abar_im, x_re, x_im = _diagonal_pairs(
            u_ptr, delta_ptr, bias_ptr, tk, mask_tk, k, mask_k, a_re, a_im,
            METHOD, COMPLEX, DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)
        hc_re, hc_im = _chunk_states(abar_re, abar_im, x_re, x_im, h_re, h_im, COMPLEX)
        if HAS_GAIN:
            gain = _load(gain_ptr, tk, mask_tk, 0.0)
            g_re, g_im = _cscale(hc_re, hc_im, gain, COMPLEX)
        else:
            g_re, g_im = hc_re, hc_im
        _store_complex(out_ptr, tk, g_re, g_im, mask_tk, COMPLEX)
        h_re, h_im = _crow(hc_re, hc_im, rows, T - 1, COMPLEX)


@_triton_jit
def _diagonal_scan_bwd_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, gain_ptr, states_ptr, dout_ptr,
    du_ptr, dpre_ptr, dsum_ptr, dA_ptr, dgain_ptr,
    L, K,
    METHOD: tl.constexpr, COMPLEX: tl.constexpr, DELTA_PER_STEP: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_GAIN: tl.constexpr, T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Gradients of :func:`diagonal_scan` for one (batch, channel block) program.

    Inputs as the forward kernel, with its states and dout (Bt, L, K) (complex with A).
    Writes du (complex with A), dgain: (Bt, L, K); dpre = ∂ℓ/∂(δ + bias): (Bt, L, K) for a
    per-step δ; dsum = its partial sums over time, as in the selective backward; partial
    sums dA: (Bt, K). du, dgain, dpre in their inputs' dtypes, the partial sums in A's.
    """
    pid_b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    steps = tl.arange(0, T)
    rows = steps[:, None]
    mask_k = k < K
    n_chunks = tl.cdiv(L, T)
    dtype = A_ptr.dtype.element_ty  # the accumulation dtype: fp32 (for bf16/fp16 inputs too) or fp64

    a_re, a_im = _load_complex(A_ptr, k, mask_k, -1.0, COMPLEX)
    dA_re = tl.zeros((BLOCK_K,), dtype)
    dA_im = tl.zeros((BLOCK_K,), dtype) if COMPLEX else 0.0
    # Σ_t dpre at A's precision: ∂ℓ/∂δ for a (K,) δ; ∂ℓ/∂bias when dpre is written in bf16 or
    # fp16 (from an fp32 dpre torch sums it after the kernel, which costs no registers here)
    SUM_DPRE: tl.constexpr = (not DELTA_PER_STEP) or (HAS_BIAS and dpre_ptr.dtype.element_ty.primitive_bitwidth < 32)
    if SUM_DPRE:
        dpre_sum = tl.zeros((BLOCK_K,), dtype)
    # λ at the first step of the chunk after the current one
    lam1_re = tl.zeros((BLOCK_K,), dtype)
    lam1_im = tl.zeros((BLOCK_K,), dtype) if COMPLEX else 0.0
    for i in range(0, n_chunks):
        chunk = n_chunks - 1 - i
        t = chunk * T + steps
        mask_tk = (t < L)[:, None] & mask_k[None, :]
        tk = pid_b * L * K + t[:, None] * K + k[None, :]

        # recompute the chunk: Ā_t, F_t u_t and h_t
        u_re, u_im, pre, dt, f_re, f_im, abar_re, abar_im, x_re, x_im = _diagonal_pairs(
            u_ptr, delta_ptr, bias_ptr, tk, mask_tk, k, mask_k, a_re, a_im,
            METHOD, COMPLEX, DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)
        h0_re, h0_im = _load_complex(states_ptr, (pid_b * n_chunks + chunk) * K + k, mask_k, 0.0, COMPLEX)
        h_re, h_im = _chunk_states(abar_re, abar_im, x_re, x_im, h0_re, h0_im, COMPLEX)
        if DELTA_PER_STEP:  # Ā_{t+1}, for the adjoint (Δ_{t+1}: a cache hit but for one step)
            mask_next = (t + 1 < L)[:, None] & mask_k[None, :]
            dt_next = _load_delta(delta_ptr, bias_ptr, tk + K, mask_next, k[None, :], mask_k[None, :],
                                  DELTA_PER_STEP, HAS_BIAS, SOFTPLUS)[1]
            anext_re, anext_im, _, _ = _discretize(dt_next, a_re, a_im, METHOD, COMPLEX)
        else:
            anext_re, anext_im = abar_re, abar_im

        # direct ∂ℓ/∂h_t = gain_t dg_t,   ∂ℓ/∂gain_t = Re(dg_t conj(h_t))
        g_re, g_im = _load_complex(dout_ptr, tk, mask_tk, 0.0, COMPLEX)
        if HAS_GAIN:
            _store(dgain_ptr, tk, _re_mul_conj(g_re, g_im, h_re, h_im, COMPLEX), mask_tk)
            gain = _load(gain_ptr, tk, mask_tk, 0.0)
            g_re, g_im = _cscale(g_re, g_im, gain, COMPLEX)

        # adjoint: λ_t = g_t + conj(Ā_{t+1}) λ_{t+1}  (reversed scan)
        lam_re, lam_im, lam1_re, lam1_im = _chunk_adjoint(g_re, g_im, anext_re, anext_im, lam1_re, lam1_im, rows,
                                                          COMPLEX)

        # ∂ℓ/∂(F u)_t = λ_t:  ∂ℓ/∂u = λ conj(F),  ∂ℓ/∂F = λ conj(u),  ∂ℓ/∂Ā_t = λ_t conj(h_{t-1})
        du_re, du_im = _cmul_conj(lam_re, lam_im, f_re, f_im, COMPLEX)
        _store_complex(du_ptr, tk, du_re, du_im, mask_tk, COMPLEX)
        gf_re, gf_im = _cmul_conj(lam_re, lam_im, u_re, u_im, COMPLEX)
        gt_re, gt_im = _transition_adjoint(lam_re, lam_im, h_re, h_im, x_re, x_im, h0_re, h0_im, rows,
                                           METHOD, COMPLEX)
        g_dt, ga_re, ga_im = _discretize_grad(dt, a_re, a_im, abar_re, abar_im, f_re, f_im,
                                              gt_re, gt_im, gf_re, gf_im, METHOD, COMPLEX)
        ga_re, ga_im = _csum(ga_re, ga_im, 0, COMPLEX)
        dA_re += ga_re
        dA_im += ga_im
        dpre = g_dt
        if SOFTPLUS:
            dpre = dpre * tl.sigmoid(pre)
        if DELTA_PER_STEP:
            _store(dpre_ptr, tk, dpre, mask_tk)
        if SUM_DPRE:
            dpre_sum += tl.sum(tl.where(mask_tk, dpre, 0.0), 0)

    _store_complex(dA_ptr, pid_b * K + k, dA_re, dA_im, mask_k, COMPLEX)
    if SUM_DPRE:
        tl.store(dsum_ptr + pid_b * K + k, dpre_sum, mask=mask_k)


# ---------------------------------------------------------------------------------------
# Input checks (shared by the kernels and their references)
# ---------------------------------------------------------------------------------------

def _describe(x) -> str:
    """What x is, for error messages."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype} on {x.device}"
    return f"{type(x).__name__} {x!r}"


def _expect(name: str, x, shapes: dict[str, tuple[int, ...]],
            dtypes: tuple[torch.dtype, ...] | dict[str, tuple[torch.dtype, ...]]) -> str:
    """Raise ValueError unless x is a tensor of one of `shapes` ({description: shape}) and one
    of `dtypes` (for every shape, or {description: dtypes} per shape); return the description
    of its shape."""
    per_shape = dtypes if isinstance(dtypes, dict) else dict.fromkeys(shapes, dtypes)
    every = tuple(dict.fromkeys(d for label in shapes for d in per_shape[label]))
    allowed = " or ".join(f"{label} = {shape}" for label, shape in shapes.items())
    kinds = " or ".join(str(d) for d in every)
    if not isinstance(x, torch.Tensor) or x.dtype not in every:
        raise ValueError(f"{name} must be a tensor of shape {allowed} and dtype {kinds}; got {_describe(x)}")
    for label, shape in shapes.items():
        if tuple(x.shape) == shape:
            if x.dtype not in per_shape[label]:
                kinds = " or ".join(str(d) for d in per_shape[label])
                raise ValueError(f"{name} of shape {label} = {shape} must have dtype {kinds}; got {_describe(x)}")
            return label
    raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {allowed}")


def _check_real_input(name: str, x, ndim: int, axes: str) -> torch.dtype:
    """ValueError unless x is a real (float64, float32, bfloat16 or float16) tensor of ndim axes,
    none empty; returns the accumulation dtype (float32 for bf16 and fp16)."""
    if not isinstance(x, torch.Tensor) or x.dtype not in _ACCUMULATION or x.dim() != ndim or x.numel() == 0:
        raise ValueError(f"{name} must be a real {axes} tensor of dtype torch.float32, torch.float64, torch.bfloat16 "
                         f"or torch.float16 with no empty axis; got {_describe(x)}")
    return _ACCUMULATION[x.dtype]


FUSED_DISCRETIZATIONS = ("zoh", "bilinear", "zoh_euler")  # one input term per step (not the trapezoidal rule)


def _check_common(discretization, tensors: dict) -> None:
    """The discretisation name, and one device (u's) for every tensor."""
    if discretization not in FUSED_DISCRETIZATIONS:
        raise ValueError(f"discretization={discretization!r} is not valid; expected one of {list(FUSED_DISCRETIZATIONS)}")
    device = tensors["u"].device
    for name, x in tensors.items():
        if x is not None and x.device != device:
            raise ValueError(f"{name} is on device {x.device}; expected the device of u, {device}")


def _check_scale(scale) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a real number (int or float); got {_describe(scale)}")


def _check_A(A, K: int, axes: str, ndim: int, real: torch.dtype) -> None:
    complex_ = _COMPLEX_OF[real]
    if (not isinstance(A, torch.Tensor) or A.dim() != ndim or A.shape[0] != K or A.numel() == 0
            or A.dtype not in (real, complex_)):
        raise ValueError(f"A must be a {axes} tensor with K = {K} and dtype {real} or {complex_}; got {_describe(A)}")


def _check_selective(u, delta, A, B, C, D, z, delta_bias, discretization, scale) -> None:
    """ValueError on any input of :func:`selective_scan` outside its documented shapes and dtypes."""
    real = _check_real_input("u", u, 3, "(Bt, L, K)")
    batch, length, K = u.shape
    _check_A(A, K, "(K, n)", 2, real)
    n = A.shape[1]
    state = A.dtype
    step = _per_step_dtypes(real)
    _expect("delta", delta, {"(Bt, L, K)": (batch, length, K), "(K,)": (K,)}, {"(Bt, L, K)": step, "(K,)": (real,)})
    if B is not None:
        _expect("B", B, {"(Bt, L, n)": (batch, length, n)}, (*step, state))
    if C is None:
        raise ValueError(f"C is required: a (Bt, L, n) = {(batch, length, n)} or (K, n) = {(K, n)} tensor")
    _expect("C", C, {"(Bt, L, n)": (batch, length, n), "(K, n)": (K, n)},
            {"(Bt, L, n)": (state,) if A.is_complex() else step, "(K, n)": (state,)})
    for name, x, shape in (("D", D, (K,)), ("delta_bias", delta_bias, (K,)), ("z", z, (batch, length, K))):
        if x is not None:
            _expect(name, x, {"(K,)" if len(shape) == 1 else "(Bt, L, K)": shape}, (real,) if len(shape) == 1 else step)
    _check_scale(scale)
    _check_common(discretization, dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias))


def _check_step(h, u, delta, A, B, C, D, z, delta_bias, discretization, scale, fixed_C) -> bool:
    """ValueError on any input of :func:`selective_state_step`; returns whether C is (K, n)."""
    real = _check_real_input("u", u, 2, "(Bt, K)")
    batch, K = u.shape
    _check_A(A, K, "(K, n)", 2, real)
    n = A.shape[1]
    state = A.dtype
    step = _per_step_dtypes(real)
    _expect("h", h, {"(Bt, K, n)": (batch, K, n)}, (state,))
    _expect("delta", delta, {"(Bt, K)": (batch, K), "(K,)": (K,)}, {"(Bt, K)": step, "(K,)": (real,)})
    if B is not None:
        _expect("B", B, {"(Bt, n)": (batch, n)}, (*step, state))
    if C is None:
        raise ValueError(f"C is required: a (Bt, n) = {(batch, n)} or (K, n) = {(K, n)} tensor")
    c_dtypes = {"(Bt, n)": (state,) if A.is_complex() else step, "(K, n)": (state,)}
    if fixed_C is None:
        if batch == K:
            raise ValueError(f"C of shape {(K, n)} is ambiguous when Bt = K = {K}: pass fixed_C=True for a per-channel "
                             "C (K, n), fixed_C=False for a C (Bt, n) shared by the channels")
        fixed_C = _expect("C", C, {"(Bt, n)": (batch, n), "(K, n)": (K, n)}, c_dtypes) == "(K, n)"
    else:
        _expect("C", C, {"(K, n)": (K, n)} if fixed_C else {"(Bt, n)": (batch, n)}, c_dtypes)
    for name, x, shape in (("D", D, (K,)), ("delta_bias", delta_bias, (K,)), ("z", z, (batch, K))):
        if x is not None:
            _expect(name, x, {"(K,)" if len(shape) == 1 else "(Bt, K)": shape}, (real,) if len(shape) == 1 else step)
    _check_scale(scale)
    _check_common(discretization, dict(u=u, h=h, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias))
    return fixed_C


def _check_diagonal(u, delta, A, gain, delta_bias, discretization) -> None:
    """ValueError on any input of :func:`diagonal_scan`."""
    dtypes = (*_ACCUMULATION, *_COMPLEX_OF.values())
    if not isinstance(u, torch.Tensor) or u.dim() != 3 or u.numel() == 0 or u.dtype not in dtypes:
        raise ValueError(f"u must be a (Bt, L, K) tensor of dtype float32, float64, bfloat16, float16, complex64 or "
                         f"complex128 with no empty axis; got {_describe(u)}")
    batch, length, K = u.shape
    real = u.dtype.to_real() if u.is_complex() else _ACCUMULATION[u.dtype]
    _check_A(A, K, "(K,)", 1, real)
    if u.is_complex() and not A.is_complex():
        raise ValueError(f"u is complex ({u.dtype}) but A is real ({A.dtype}); a complex u needs a complex A")
    step = _per_step_dtypes(real)
    _expect("delta", delta, {"(Bt, L, K)": (batch, length, K), "(K,)": (K,)}, {"(Bt, L, K)": step, "(K,)": (real,)})
    if gain is not None:
        _expect("gain", gain, {"(Bt, L, K)": (batch, length, K)}, step)
    if delta_bias is not None:
        _expect("delta_bias", delta_bias, {"(K,)": (K,)}, (real,))
    _check_common(discretization, dict(u=u, delta=delta, A=A, gain=gain, delta_bias=delta_bias))


_INT32_LIMIT = 2 ** 31


_GRID_Y_LIMIT = 65535  # CUDA's largest grid extent along its second axis


def _check_choice(name: str, value) -> None:
    """A keyword that is None (the default) or a bool."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; expected None, True or False")


def _check_atomic_sums(atomic_sums) -> None:
    _check_choice("atomic_sums", atomic_sums)
    if atomic_sums and torch.are_deterministic_algorithms_enabled():
        raise ValueError("atomic_sums=True is not valid under torch.use_deterministic_algorithms(True): atomic adds "
                         "sum in an order that varies from run to run; expected None or False")


def _check_slice_sizes(batch: int, length: int, K: int, n: int, is_complex: bool) -> None:
    """The selective kernels index inside one batch element with 32-bit offsets: L·K, and L·n
    (twice that when complex, two planes), must stay below 2^31; and the batch is the grid's
    second axis, at most 65535 programs."""
    if batch > _GRID_Y_LIMIT:
        raise ValueError(f"Bt = {batch} is too large: the batch is the second axis of the kernels' grid, expected "
                         f"<= {_GRID_Y_LIMIT}; call it on smaller batches")
    planes = 2 if is_complex else 1
    for name, size in (("L·K", length * K), ("L·n", planes * length * n)):
        if size >= _INT32_LIMIT:
            raise ValueError(f"{name} = {size}{' (two planes)' if name == 'L·n' and is_complex else ''} is too large: "
                             f"one batch element is indexed in 32 bits, expected < 2^31 (call it on fewer "
                             f"channels, or use another mode for L = {length})")


def _check_launch(u: torch.Tensor, chunk_size: int | None, block_k: int | None) -> None:
    """The tiling is valid (chunk_size None: no chunks), and the kernels can run on u's device."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 2
                                   or chunk_size & (chunk_size - 1)):
        raise ValueError(f"chunk_size={chunk_size!r} is not valid; expected a power of two >= 2")
    if block_k is not None and (isinstance(block_k, bool) or not isinstance(block_k, int) or block_k < 1
                                or block_k & (block_k - 1)):
        raise ValueError(f"block_k={block_k!r} is not valid; expected None or a power of two >= 1")
    if triton is None:
        raise RuntimeError("triton is not installed; the *_reference functions compute the same in PyTorch")
    if not runs_on(u.device):
        raise ValueError(f"u is on device {u.device}; the Triton kernels need CUDA tensors, or CPU tensors with "
                         "TRITON_INTERPRET=1 set before triton is imported")


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------


# Default tiles per (complex A, per-step Δ): (T, forward BLOCK_K, forward warps, backward
# BLOCK_K, backward warps), of selective_scan and of diagonal_scan, for up to 32 states (from
# _LARGE_STATE states the carried (BLOCK_N, BLOCK_K) tiles set BLOCK_K and the warps). T =
# chunk_size steps of the backward, which restarts from the states the forward stored every T
# steps; the forward's T too, unless it has an entry of its own (_FORWARD_TILES). Chosen so that every kernel compiles for sm_90
# (fp32 and bf16; no argument specialised, and every one aligned) to at most 128 registers per
# thread with no spills, by triton 3.9 and 3.6 (tests/test_kernel_resources.py runs the
# installed one), taking the pair with the fewest warp instructions per element in their main
# loops (module docstring: the rule, its two exceptions, the counts). `make gpu-tune`
# (models.triton_tune) prints measured replacements for these entries.
_SELECTIVE_TILES = {
    (False, False): (32, 8, 1, 1, 1),
    (False, True): (64, 1, 1, 2, 1),
    (True, False): (32, 2, 1, 1, 1),
    (True, True): (64, 1, 1, 1, 1),
}
_DIAGONAL_TILES = {  # n = 1: one state per channel
    (False, False): (16, 64, 8, 32, 8),
    (False, True): (8, 32, 1, 16, 2),
    (True, False): (8, 32, 1, 64, 8),
    (True, True): (8, 32, 1, 16, 4),
}
# The forward's T need not be the backward's: it stores the state entering every backward
# chunk, at any row of its own chunks. (complex, selective) -> (T, BLOCK_K, warps) of
# selective_scan's forward, with or without autograd, where measured; T a multiple of the
# backward's (else, and for an entry not here, the forward takes the pair's T and tile).
_FORWARD_TILES = {
    (False, True): (128, 1, 1),
}
# selective_scan(channels_first=True), u, δ, z in (Bt, K, L): its own entries where measured (a
# channel's steps adjacent, one or two channels per program read whole runs); the rest as above.
_CHANNELS_FIRST_TILES = {
    (False, True): (64, 1, 1, 1, 1),
}
_CHANNELS_FIRST_FORWARD_TILES = {
    (False, True): (128, 2, 1),
}
_TILE_TABLES = {"selective": _SELECTIVE_TILES, "diagonal": _DIAGONAL_TILES}
# (complex, selective, channels_first) of the selective scans whose backward adds its gradients
# of a shared B and C into one (Bt, n, L) tensor by atomic adds by default, instead of writing
# one per channel block for torch to sum (``atomic_sums`` of selective_scan): where a GPU timed
# it faster (`make gpu-tune` times both; the three here on an H200, module docstring, Measured).
_ATOMIC_SUMS: frozenset = frozenset({(False, True, False), (False, True, True), (True, True, False)})
# (complex, selective, channels_first, backward) of the selective kernels whose default tile
# issues each state's loads one state ahead (Tile.prefetch), and -> the factor their loop over
# states is unrolled by (Tile.unroll; 1 where absent); below _LARGE_STATE states. Where a GPU
# timed it faster (`make gpu-tune GPU_TUNE='--prefetch 0,1 --unroll 1,2 ...'` times the
# variants of each tile); none timed yet.
_PREFETCH: frozenset = frozenset()
_UNROLL: dict = {}
_LARGE_STATE = 64  # from 64 states (BLOCK_N), the tiles of default_tile's last lines
_CARRIED_ELEMENTS = 512
_MIN_BLOCK_K = 4  # at BLOCK_K 2 (n 256, 16 warps) the Mamba backward spills in bf16
_STEP_WARPS = 4
_STEP_ELEMENTS = 1024 // 16  # the step kernel's (BLOCK_K, BLOCK_N) tile


@dataclass(frozen=True)
class Tile:
    """A kernel's tile: T steps per chunk, BLOCK_K channels, BLOCK_N states, warps."""

    chunk_size: int
    block_k: int
    block_n: int
    num_warps: int
    prefetch: bool = False  # a selective kernel's loads of state j + 1 issued before state j's arithmetic
    unroll: int = 1  # a selective kernel's loop over states unrolled by this factor


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _entry(scan: str, is_complex: bool, selective: bool, channels_first: bool = False,
           forward: bool = False) -> tuple | None:
    """A scan's table entry: (T, BLOCK_K fwd, warps fwd, BLOCK_K bwd, warps bwd), or with
    forward the selective forward's own (T, BLOCK_K, warps) (None where there is none); from the
    channels-first tables where they hold one."""
    key = bool(is_complex), bool(selective)
    if forward:
        tables = (_CHANNELS_FIRST_FORWARD_TILES, _FORWARD_TILES) if channels_first else (_FORWARD_TILES,)
    else:
        tables = (_CHANNELS_FIRST_TILES, _TILE_TABLES[scan]) if channels_first else (_TILE_TABLES[scan],)
    return next((table[key] for table in tables if key in table), None)


def default_chunk_size(kind: str, is_complex: bool, selective: bool, channels_first: bool = False) -> int:
    """The default T of a scan's backward (kind ``selective`` or ``diagonal``): the steps between
    the states its forward stores, and its forward's T unless :func:`default_tile` gives that its own."""
    return _entry(kind.split("_")[0], is_complex, selective, channels_first)[0]


def default_tile(kind: str, n: int, is_complex: bool, selective: bool, chunk_size: int | None = None,
                 channels_first: bool = False) -> Tile:
    """The default tile of kernel ``kind`` (selective_fwd, selective_bwd, selective_step,
    selective_inference: the forward compiled without stored states, diagonal_fwd,
    diagonal_bwd) for n states per channel (1 for the diagonal scan), a complex or real A, and a
    per-step (selective) or time-invariant Δ. chunk_size: T when the caller chose it, forward
    and backward alike (None: the backward's :func:`default_chunk_size`; a selective forward
    with an entry of its own whose T is a multiple of it, that entry's T). channels_first: a
    selective scan's per-step tensors are (Bt, K, L) (:func:`selective_scan`)."""
    block_n = _next_power_of_2(n)
    scan, part = kind.split("_")
    T, *sizes = _entry(scan, is_complex, selective, channels_first)
    if part == "step":
        return Tile(chunk_size or T, max(1, _STEP_ELEMENTS // block_n), block_n, _STEP_WARPS)
    if scan == "diagonal":
        block_k, warps = sizes[:2] if part == "fwd" else sizes[2:]
        return Tile(chunk_size or T, block_k, 1, warps)
    key = (bool(is_complex), bool(selective), bool(channels_first), part == "bwd")
    prefetch, unroll = key in _PREFETCH, _UNROLL.get(key, 1)
    if part in ("fwd", "inference"):  # the forward holds no tile with an n axis
        own = _entry(scan, is_complex, selective, channels_first, forward=True)
        T, block_k, warps = own if own is not None and own[0] % T == 0 else (T, *sizes[:2])
        return Tile(chunk_size or T, block_k, block_n, warps, prefetch, unroll)
    T, (block_k, warps) = chunk_size or T, sizes[2:]
    if block_n < _LARGE_STATE:
        return Tile(T, block_k, block_n, warps, prefetch, unroll)
    # many states: the backward's carried (BLOCK_N, BLOCK_K) tiles set BLOCK_K and the warps, whatever the entry
    block_k = max(_MIN_BLOCK_K, _CARRIED_ELEMENTS // block_n)
    return Tile(T, block_k, block_n, _large_state_backward_warps(block_n, is_complex and selective))


def _large_state_backward_warps(block_n: int, complex_per_step: bool) -> int:
    """The warps of a selective backward at BLOCK_N >= _LARGE_STATE states: its carried (BLOCK_N,
    BLOCK_K) tiles spill on fewer (module docstring: at n 64, the complex backward with Δ, B and
    C per step spills 8 bytes in bf16 on 4 warps (triton 3.9), 48 on 8 (triton 3.6))."""
    return 16 if block_n >= 128 or complex_per_step else 8


@dataclass(frozen=True)
class _Launch:
    """Settings shared by a forward launch and its backward. The forward stores the state
    entering every backward.chunk_size steps, a divisor of forward.chunk_size."""

    method: str
    softplus: bool
    forward: Tile
    backward: Tile
    channels_first: bool = False  # selective scans: u, a per-step δ, z and out as (Bt, K, L)
    atomic_sums: bool = False  # selective backward: a shared B's and C's gradients added atomically
    # for an A/B of two code choices (models.triton_tune --compare): the selective backward's
    # FLIP_ADJOINT as given (None: flip_adjoint()), and the selective kernels compiled with their
    # step and channel masks where whole chunks and blocks would need none (EVEN off)
    flip: bool | None = None
    masked: bool = False


def _launch_settings(kind: str, discretization: str, softplus, chunk_size: int | None, block_k: int | None, K: int,
                     n: int, is_complex: bool, selective: bool,
                     channels_first: bool | None = None, atomic_sums: bool | None = None) -> _Launch:
    """The forward's and the backward's tiles (kind: selective or diagonal): the defaults of
    :func:`default_tile`, with T = chunk_size and BLOCK_K = block_k where given (BLOCK_K at
    most K padded to a power of two). channels_first: the selective
    kernels' layout of the per-step tensors (None: :func:`default_channels_first`). atomic_sums: how
    a selective backward sums its gradients of a shared B and C over channel blocks
    (:func:`default_atomic_sums` when None)."""
    if channels_first is None:
        channels_first = kind == "selective" and default_channels_first(n, is_complex, selective)
    tiles = []
    for part in ("fwd", "bwd"):
        tile = default_tile(f"{kind}_{part}", n, is_complex, selective, chunk_size, channels_first)
        width = block_k or min(_next_power_of_2(K), tile.block_k)
        tiles.append(replace(tile, block_k=width))
    if atomic_sums is None:
        atomic_sums = kind == "selective" and default_atomic_sums(is_complex, selective, channels_first)
    return _Launch(discretization, bool(softplus), *tiles, channels_first, atomic_sums)


def default_channels_first(n: int, is_complex: bool, selective: bool) -> bool:
    """Whether a selective scan with n states runs its kernels on (Bt, K, L) per-step tensors by
    default: where :data:`_CHANNELS_FIRST_TILES` holds an entry (timed faster than the (Bt, L,
    K) one), for fewer than _LARGE_STATE states (its tiles hold for those)."""
    return (bool(is_complex), bool(selective)) in _CHANNELS_FIRST_TILES and _next_power_of_2(n) < _LARGE_STATE


def _even(length: int, K: int, tile: Tile, masked: bool = False) -> bool:
    """Whether a selective kernel compiles without its step and channel masks (EVEN): where its
    chunks and channel blocks cover L and K exactly, unless the launch keeps them (masked)."""
    return length % tile.chunk_size == 0 and K % tile.block_k == 0 and not masked


def flip_adjoint(is_complex: bool, selective: bool) -> bool:
    """Whether the selective backward scans its adjoint forward over reversed inputs
    (FLIP_ADJOINT): with triton before 3.9 (:data:`_FLIP_ADJOINT`), but for a complex
    time-invariant Ā, where triton 3.6 then computes the discretisation twice (S4D's backward:
    540 -> 673 instructions in its loop over states, for 118 -> 84 shuffles)."""
    return _FLIP_ADJOINT and (bool(selective) or not is_complex)


def flip_gather(is_complex: bool, tile: Tile, even: bool) -> bool:
    """Whether a selective backward that scans its adjoint over reversed inputs (FLIP_ADJOINT,
    :func:`flip_adjoint`) flips λ back by ``tl.gather`` (FLIP_GATHER) rather than ``tl.flip``:
    for a real A on one warp in whole chunks (EVEN), where triton 3.6 compiles the gather to one
    shuffle per value and tl.flip to one per lane bit (the Mamba backward in (Bt, K, L): 214 ->
    206 instructions in its loop over states, 47 -> 39 shuffles); with masks, or over several
    warps (n 256: 348 -> 464), to more."""
    return not is_complex and tile.num_warps == 1 and even


def default_atomic_sums(is_complex: bool, selective: bool, channels_first: bool = False) -> bool:
    """Whether a selective backward adds its gradients of a shared B and C atomically by
    default: where :data:`_ATOMIC_SUMS` says, and never under
    ``torch.use_deterministic_algorithms(True)`` (the order of the atomic adds varies from run
    to run, and so do the float sums' last bits)."""
    return (bool(is_complex), bool(selective), bool(channels_first)) in _ATOMIC_SUMS and \
        not torch.are_deterministic_algorithms_enabled()


def _prepared(x: torch.Tensor | None) -> torch.Tensor | None:
    """Contiguous, with any lazy conjugation applied (differentiable; the kernels read memory)."""
    return None if x is None else x.resolve_conj().contiguous()


def _state_major(x: torch.Tensor | None) -> torch.Tensor | None:
    """A shared (Bt, L, n) B or C as a contiguous (Bt, n, L) tensor (differentiable): each state's
    steps adjacent, so that the kernels read and write a state's (T,) column in one run."""
    return None if x is None else x.resolve_conj().transpose(1, 2).contiguous()


def _selective_operands(u, delta, A, B, C, D, z, delta_bias) -> tuple:
    """The inputs of :func:`selective_scan` as its kernels read them: contiguous, a real B with a
    complex A made complex, a shared B and C state-major (:func:`_state_major`)."""
    if A.is_complex() and B is not None and not B.is_complex():
        B = B.to(A.dtype)
    u, delta, A, D, z, delta_bias = map(_prepared, (u, delta, A, D, z, delta_bias))
    return u, delta, A, _state_major(B), _state_major(C) if C.dim() == 3 else _prepared(C), D, z, delta_bias


def _diagonal_operands(u, delta, A, gain, delta_bias) -> tuple:
    """The inputs of :func:`diagonal_scan` as its kernels read them: contiguous, a real u with a
    complex A made complex."""
    if A.is_complex() and not u.is_complex():
        u = u.to(A.dtype)
    return tuple(map(_prepared, (u, delta, A, gain, delta_bias)))


def _planes(x: torch.Tensor | None, placeholder: torch.Tensor) -> torch.Tensor:
    """The kernel argument for x: its (..., 2) real view if complex; placeholder for None."""
    if x is None:
        return placeholder
    return torch.view_as_real(x) if x.is_complex() else x


def _as_complex(x: torch.Tensor, is_complex: bool) -> torch.Tensor:
    """A kernel's (..., 2) real output as a complex tensor, or x when real."""
    return torch.view_as_complex(x) if is_complex else x


def _batch_length_channels(u: torch.Tensor, launch: _Launch) -> tuple[int, int, int]:
    """(Bt, L, K) of a per-step tensor in the launch's layout."""
    batch, *sizes = u.shape
    return (batch, *sizes[::-1]) if launch.channels_first else (batch, *sizes)


def _channels_first(x: torch.Tensor | None) -> torch.Tensor | None:
    """A (Bt, L, K) tensor as a contiguous (Bt, K, L) one (differentiable; one copy)."""
    return None if x is None else x.transpose(1, 2).contiguous()


def _channels_first_steps(u: torch.Tensor, delta: torch.Tensor, z: torch.Tensor | None) -> tuple:
    """(u, δ, z) as the channels-first kernels read them: the per-step ones (Bt, K, L), a (K,) δ
    as it is (no copy for a transposed view of a contiguous (Bt, K, L) tensor)."""
    return _channels_first(u), _channels_first(delta) if delta.dim() == 3 else delta, _channels_first(z)


def _selective_forward(u, delta, A, B, C, D, z, delta_bias, scale, launch: _Launch, save_states: bool):
    """out (Bt, L, K) and, when save_states, the chunk-start states of the backward's chunks
    (Bt, ⌈L/T⌉, n, K[, 2]), T the backward's (a divisor of the forward's). A shared B or C comes
    state-major, (Bt, n, L) (:func:`_state_major`); u, a per-step δ, z and out are (Bt, K, L)
    when launch.channels_first."""
    batch, length, K = _batch_length_channels(u, launch)
    n = A.shape[1]
    pairs = (2,) if A.is_complex() else ()
    out = torch.empty_like(u)
    tile, stride = launch.forward, launch.backward.chunk_size if save_states else launch.forward.chunk_size
    # the state entering every backward chunk (zero entering the first), or a two-slot scratch
    states = u.new_empty((batch, triton.cdiv(length, stride) if save_states else 2, n, K, *pairs), dtype=scale.dtype)
    states[:, 0] = 0
    _selective_scan_fwd_kernel[(triton.cdiv(K, tile.block_k), batch)](
        u, delta, _planes(delta_bias, u), _planes(A, u), _planes(B, u), _planes(C, u), _planes(D, u),
        _planes(z, u), scale, out, states, length, K, n,
        METHOD=launch.method, COMPLEX=A.is_complex(), DELTA_PER_STEP=delta.dim() == 3,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=launch.softplus, HAS_B=B is not None, C_SHARED=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, SAVE_STATES=save_states, T=tile.chunk_size,
        BLOCK_K=tile.block_k, CHANNELS_FIRST=launch.channels_first, T_STATES=stride,
        EVEN=_even(length, K, tile, launch.masked), PREFETCH=tile.prefetch, UNROLL=tile.unroll,
        num_warps=tile.num_warps,
    )
    return out, (states if save_states else None)


def _selective_backward(u, delta, A, B, C, D, z, delta_bias, scale, states, dout, launch: _Launch):
    """Gradients (u, delta, A, B, C, D, z, delta_bias) of :func:`selective_scan`; None for absent
    inputs. B and a shared C, and their gradients, are state-major (Bt, n, L); the per-step
    tensors and their gradients (Bt, K, L) when launch.channels_first."""
    batch, length, K = _batch_length_channels(u, launch)
    n = A.shape[1]
    is_complex = A.is_complex()
    pairs = (2,) if is_complex else ()
    per_step = delta.dim() == 3
    c_shared = C.dim() == 3
    tile = launch.backward
    n_blocks = triton.cdiv(K, tile.block_k)
    acc = scale.dtype  # fp32 or fp64: partial sums over programs, reduced below
    du = torch.empty_like(u)
    dpre = torch.empty_like(delta) if per_step else u
    dsum = u.new_empty((batch, K), dtype=acc)
    dA = u.new_empty((batch, K, n, *pairs), dtype=acc)
    # a shared B's and C's gradients: one slice per channel block, summed below, or one
    # that every block adds into (launch.atomic_sums)
    slices, new = ((), torch.zeros) if launch.atomic_sums else ((n_blocks,), torch.empty)
    dB = new((*slices, batch, n, length, *pairs), dtype=acc, device=u.device) if B is not None else u
    dC = (new((*slices, batch, n, length, *pairs), dtype=acc, device=u.device) if c_shared
          else u.new_empty((batch, K, n, *pairs), dtype=acc))
    dD = u.new_empty((batch, K), dtype=acc) if D is not None else u
    dz = torch.empty_like(z) if z is not None else u
    flip = flip_adjoint(is_complex, per_step) if launch.flip is None else launch.flip
    even = _even(length, K, tile, launch.masked)
    _selective_scan_bwd_kernel[(n_blocks, batch)](
        u, delta, _planes(delta_bias, u), _planes(A, u), _planes(B, u), _planes(C, u), _planes(D, u),
        _planes(z, u), scale, states, dout, du, dpre, dsum, dA, dB, dC, dD, dz, length, K, n,
        METHOD=launch.method, COMPLEX=is_complex, DELTA_PER_STEP=per_step, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=launch.softplus, HAS_B=B is not None, C_SHARED=c_shared, HAS_D=D is not None,
        HAS_Z=z is not None, T=tile.chunk_size, BLOCK_K=tile.block_k, BLOCK_N=tile.block_n,
        CHANNELS_FIRST=launch.channels_first, ATOMIC_SUMS=launch.atomic_sums,
        FLIP_ADJOINT=flip, EVEN=even, PREFETCH=tile.prefetch, UNROLL=tile.unroll,
        FLIP_GATHER=flip and flip_gather(is_complex, tile, even), num_warps=tile.num_warps,
    )
    summed = (lambda g: g) if launch.atomic_sums else (lambda g: g.sum(0))
    # ∂ℓ/∂bias, and ∂ℓ/∂δ for a (K,) δ: Σ over time of dpre, summed by the kernel (SUM_DPRE) or here
    time_axis = 2 if launch.channels_first else 1
    d_channel = dpre.sum((0, time_axis)) if per_step and dpre.dtype == acc else dsum.sum(0)
    return (
        du,
        dpre if per_step else d_channel,
        _as_complex(dA.sum(0), is_complex),
        None if B is None else _as_complex(summed(dB), is_complex).to(B.dtype),
        _as_complex(summed(dC) if c_shared else dC.sum(0), is_complex).to(C.dtype),
        None if D is None else dD.sum(0),
        None if z is None else dz,
        None if delta_bias is None else d_channel,
    )


class _SelectiveScan(torch.autograd.Function):
    """selective_scan with the Triton forward and the hand-written Triton backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, scale, launch):
        out, states = _selective_forward(u, delta, A, B, C, D, z, delta_bias, scale, launch, save_states=True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, scale, states)
        ctx.launch = launch
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        grads = _selective_backward(*ctx.saved_tensors, dout.contiguous(), ctx.launch)
        return (*grads, None, None)


def _diagonal_forward(u, delta, A, gain, delta_bias, launch: _Launch, save_states: bool):
    """g (Bt, L, K) and, when save_states, the chunk-start states (Bt, ⌈L/T⌉, K[, 2])."""
    batch, length, K = u.shape
    out = torch.empty_like(u)
    tile = launch.forward  # the backward's T is the forward's (one table entry)
    states = torch.empty((batch, triton.cdiv(length, tile.chunk_size), K), dtype=A.dtype, device=u.device) \
        if save_states else u
    _diagonal_scan_fwd_kernel[(batch, triton.cdiv(K, tile.block_k))](
        _planes(u, u), delta, _planes(delta_bias, delta), _planes(A, delta), _planes(gain, delta), _planes(out, u),
        _planes(states, u), length, K,
        METHOD=launch.method, COMPLEX=A.is_complex(), DELTA_PER_STEP=delta.dim() == 3,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=launch.softplus, HAS_GAIN=gain is not None,
        SAVE_STATES=save_states, T=tile.chunk_size, BLOCK_K=tile.block_k, num_warps=tile.num_warps,
    )
    return out, (states if save_states else None)


def _diagonal_backward(u, delta, A, gain, delta_bias, states, dout, launch: _Launch):
    """Gradients (u, delta, A, gain, delta_bias) of :func:`diagonal_scan`; None for absent inputs."""
    batch, length, K = u.shape
    is_complex = A.is_complex()
    per_step = delta.dim() == 3
    acc = A.real.dtype if is_complex else A.dtype  # fp32 or fp64: partial sums, reduced below
    du = torch.empty_like(u)
    dpre = torch.empty_like(delta) if per_step else delta
    dsum = delta.new_empty((batch, K), dtype=acc)
    dA = torch.empty((batch, K), dtype=A.dtype, device=A.device)
    dgain = torch.empty_like(gain) if gain is not None else delta
    tile = launch.backward
    _diagonal_scan_bwd_kernel[(batch, triton.cdiv(K, tile.block_k))](
        _planes(u, u), delta, _planes(delta_bias, delta), _planes(A, delta), _planes(gain, delta),
        _planes(states, u), _planes(dout, u), _planes(du, u), dpre, dsum, _planes(dA, delta), dgain, length, K,
        METHOD=launch.method, COMPLEX=is_complex, DELTA_PER_STEP=per_step, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=launch.softplus, HAS_GAIN=gain is not None, T=tile.chunk_size, BLOCK_K=tile.block_k,
        num_warps=tile.num_warps,
    )
    # ∂ℓ/∂bias, and ∂ℓ/∂δ for a (K,) δ: Σ over time of dpre, summed by the kernel (SUM_DPRE) or here
    d_channel = dpre.sum((0, 1)) if per_step and dpre.dtype == acc else dsum.sum(0)
    return (
        du,
        dpre if per_step else d_channel,
        dA.sum(0),
        None if gain is None else dgain,
        None if delta_bias is None else d_channel,
    )


class _DiagonalScan(torch.autograd.Function):
    """diagonal_scan with the Triton forward and the hand-written Triton backward."""

    @staticmethod
    def forward(ctx, u, delta, A, gain, delta_bias, launch):
        out, states = _diagonal_forward(u, delta, A, gain, delta_bias, launch, save_states=True)
        ctx.save_for_backward(u, delta, A, gain, delta_bias, states)
        ctx.launch = launch
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        dout = dout.resolve_conj().contiguous()
        return (*_diagonal_backward(*ctx.saved_tensors, dout, ctx.launch), None)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def selective_scan(u, delta, A, B=None, C=None, D=None, z=None, delta_bias=None, delta_softplus=False,
                   discretization="zoh", scale=1.0, *, chunk_size=None, block_k=None, channels_first=None,
                   atomic_sums=None):
    """The SISO selective scan (Mamba, S4D), fused: no (Bt, L, K, n) tensor is written.

    u: (Bt, L, K) real: float64, float32, or bfloat16/float16 (accumulated in float32).
    delta: (Bt, L, K) per step, or (K,) for every step; Δ = softplus(delta + delta_bias) if
    delta_softplus else delta + delta_bias. A: (K, n) real or complex, of the accumulation
    precision (float32 for bf16/fp16 u). Per-step tensors (u, a (Bt, L, K) delta, B, a real
    shared C, z) may each be bf16 or fp16 with a float32 A; the rest have A's real dtype
    (module docstring, Dtypes). B: None (B ≡ 1) or (Bt, L, n), shared by
    the channels, complex only with a complex A. C: (Bt, L, n) shared, or (K, n) per channel,
    complex iff A is. D: None or (K,). z: None or (Bt, L, K).
      h_t[k, j] = Ā_t[k, j] h_{t-1}[k, j] + F_t[k, j] B_t[j] u_t[k],   h_{-1} = 0
      y_t[k] = scale · Re Σ_j C_t[(k,) j] h_t[k, j] + D[k] u_t[k],   out = y ⊙ silu(z)
    Returns out (Bt, L, K), u's dtype. Differentiable in every tensor input (each gradient
    in its input's dtype). chunk_size: T,
    the steps per scanned chunk; block_k: channels per program of the forward and backward
    kernels; None: the defaults of :func:`default_tile`. channels_first: True runs the kernels
    on u, a per-step delta and z laid out (Bt, K, L), a channel's steps adjacent in memory, as
    mamba-ssm lays them out: copied so, unless they are (Bt, L, K) views of such tensors
    (x.transpose(1, 2) of a contiguous (Bt, K, L) x; a shared B and C likewise as views of (Bt,
    n, L) tensors), and out is then a (Bt, L, K) view of a (Bt, K, L) tensor; False: laid out
    (Bt, L, K); None: :func:`default_channels_first` (the Mamba point's entry: channels first).
    atomic_sums: True makes the backward add its gradients of a shared B and C over the channel
    blocks by atomic adds into one (Bt, n, L) tensor (as mamba-ssm's kernel does), False writes
    one per block, (⌈K/BLOCK_K⌉, Bt, n, L), summed by torch: more memory traffic, the same
    bits every run; None: :func:`default_atomic_sums` (never atomic under
    ``torch.use_deterministic_algorithms(True)``, where True is refused).
    """
    _check_selective(u, delta, A, B, C, D, z, delta_bias, discretization, scale)
    _check_choice("channels_first", channels_first)
    _check_atomic_sums(atomic_sums)
    _check_launch(u, chunk_size, block_k)
    _check_slice_sizes(*u.shape, A.shape[1], A.is_complex())
    training = _needs_grad(u, delta, A, B, C, D, z, delta_bias)
    launch = _launch_settings("selective", discretization, delta_softplus, chunk_size, block_k, u.shape[2],
                              A.shape[1], A.is_complex(), delta.dim() == 3,
                              channels_first=channels_first, atomic_sums=atomic_sums)
    if launch.channels_first:  # no copy when they are transposed views of (Bt, K, L) tensors
        u, delta, z = _channels_first_steps(u, delta, z)
    u, delta, A, B, C, D, z, delta_bias = _selective_operands(u, delta, A, B, C, D, z, delta_bias)
    scale_t = torch.full((1,), float(scale), dtype=_ACCUMULATION[u.dtype], device=u.device)
    if training:
        out = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, scale_t, launch)
    else:
        out = _selective_forward(u, delta, A, B, C, D, z, delta_bias, scale_t, launch, save_states=False)[0]
    return out.transpose(1, 2) if launch.channels_first else out


def diagonal_scan(u, delta, A, gain=None, delta_bias=None, delta_softplus=False, discretization="zoh", *,
                  chunk_size=None, block_k=None):
    """The diagonal recurrence of a MIMO layer (S5), fused; B and C are matmuls outside.

    u: (Bt, L, K), real, or complex with a complex A. delta: (Bt, L, K) or (K,) real, with
    bias and softplus as in :func:`selective_scan`. A: (K,) real or complex. gain: None or
    (Bt, L, K) real. A real u, a (Bt, L, K) delta and gain may each be bf16 or fp16 with a
    float32 A (complex u: complex64 or complex128).
      h_t[k] = Ā_t[k] h_{t-1}[k] + F_t[k] u_t[k],   h_{-1} = 0,   g_t[k] = gain_t[k] h_t[k]
    Returns g (Bt, L, K), complex (A's dtype) iff A is, else u's dtype. Differentiable in every
    tensor input.
    """
    _check_diagonal(u, delta, A, gain, delta_bias, discretization)
    _check_launch(u, chunk_size, block_k)
    u, delta, A, gain, delta_bias = _diagonal_operands(u, delta, A, gain, delta_bias)
    launch = _launch_settings("diagonal", discretization, delta_softplus, chunk_size, block_k, u.shape[2], 1,
                              A.is_complex(), delta.dim() == 3)
    if _needs_grad(u, delta, A, gain, delta_bias):
        return _DiagonalScan.apply(u, delta, A, gain, delta_bias, launch)
    return _diagonal_forward(u, delta, A, gain, delta_bias, launch, save_states=False)[0]


def selective_state_step(h, u, delta, A, B=None, C=None, D=None, z=None, delta_bias=None, delta_softplus=False,
                         discretization="zoh", scale=1.0, *, fixed_C=None, block_k=None):
    """One step of :func:`selective_scan` from state h (inference; not differentiable).

    h: (Bt, K, n), complex iff A is. u: (Bt, K). delta: (Bt, K) or (K,). B: None or (Bt, n).
    C: (Bt, n) shared or (K, n) per channel (fixed_C says which when Bt = K; None: by shape).
    D: None or (K,). z: None or (Bt, K). Others as :func:`selective_scan`; u, a (Bt, K) delta, B,
    a real shared C and z may be bf16 or fp16, h has A's dtype.
      h' = Ā h + F B u,   y = scale · Re Σ_j C h' + D u,   y ← y ⊙ silu(z)
    Returns (y (Bt, K) in u's dtype, h' (Bt, K, n) in A's).
    """
    fixed_C = _check_step(h, u, delta, A, B, C, D, z, delta_bias, discretization, scale, fixed_C)
    _check_launch(u, None, block_k)
    with torch.no_grad():
        if A.is_complex() and B is not None and not B.is_complex():
            B = B.to(A.dtype)
        h, u, delta, A, B, C, D, z, delta_bias = map(_prepared, (h, u, delta, A, B, C, D, z, delta_bias))
        batch, K, n = h.shape
        tile = default_tile("selective_step", n, A.is_complex(), delta.dim() == 2)
        tile = Tile(tile.chunk_size, block_k or min(_next_power_of_2(K), tile.block_k), tile.block_n, tile.num_warps)
        y = torch.empty_like(u)
        h_new = torch.empty_like(h)
        _selective_step_kernel[(batch, triton.cdiv(K, tile.block_k))](
            _planes(h, u), u, delta, _planes(delta_bias, u), _planes(A, u), _planes(B, u), _planes(C, u),
            _planes(D, u), _planes(z, u), torch.full((1,), float(scale), dtype=_ACCUMULATION[u.dtype], device=u.device), y,
            _planes(h_new, u), K, n,
            METHOD=discretization, COMPLEX=A.is_complex(), DELTA_PER_STEP=delta.dim() == 2,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), HAS_B=B is not None, C_SHARED=not fixed_C,
            HAS_D=D is not None, HAS_Z=z is not None, BLOCK_K=tile.block_k, BLOCK_N=tile.block_n,
            num_warps=tile.num_warps,
        )
    return y, h_new


# ---------------------------------------------------------------------------------------
# References: step-by-step PyTorch loops, differentiated by autograd
# ---------------------------------------------------------------------------------------


def _activate_delta(delta, delta_bias, delta_softplus):
    """Δ = softplus(δ + bias) if delta_softplus else δ + bias (bias 0 when None)."""
    pre = delta if delta_bias is None else delta + delta_bias
    return nnf.softplus(pre) if delta_softplus else pre


def _reference_step(h, u_t, dt, A, B_t, C_t, D, z_t, discretization, scale):
    """h' = Ā h + F B u,  y = scale Re Σ_j C h' + D u,  y ⊙ silu(z).

    h: (Bt, K, n); u_t: (Bt, K); dt: (Bt, K) or (K,); A: (K, n); B_t: (Bt, n) or None;
    C_t: (Bt, 1, n) or (K, n) (broadcasting against h); D: (K,) or None; z_t: (Bt, K) or None.
    """
    A_bar, F = discretize(discretization, A, dt.unsqueeze(-1))
    Bu = u_t.unsqueeze(-1) if B_t is None else B_t.unsqueeze(1) * u_t.unsqueeze(-1)
    h = A_bar * h + F * Bu
    y = scale * (C_t * h).sum(-1)
    if y.is_complex():
        y = y.real
    if D is not None:
        y = y + D * u_t
    if z_t is not None:
        y = y * nnf.silu(z_t)
    return y, h


def selective_scan_reference(u, delta, A, B=None, C=None, D=None, z=None, delta_bias=None, delta_softplus=False,
                             discretization="zoh", scale=1.0):
    """:func:`selective_scan` as a loop over the steps (the definition the kernels are tested against)."""
    _check_selective(u, delta, A, B, C, D, z, delta_bias, discretization, scale)
    batch, length, K = u.shape
    dt = _activate_delta(delta, delta_bias, delta_softplus)
    dts = dt.unbind(1) if dt.dim() == 3 else [dt] * length
    Bs = B.unbind(1) if B is not None else [None] * length
    Cs = [c.unsqueeze(1) for c in C.unbind(1)] if C.dim() == 3 else [C] * length
    zs = z.unbind(1) if z is not None else [None] * length
    h = u.new_zeros((batch, K, A.shape[1]), dtype=A.dtype)
    ys = []
    for u_t, dt_t, B_t, C_t, z_t in zip(u.unbind(1), dts, Bs, Cs, zs):
        y_t, h = _reference_step(h, u_t, dt_t, A, B_t, C_t, D, z_t, discretization, scale)
        ys.append(y_t)
    return torch.stack(ys, 1)


def selective_state_step_reference(h, u, delta, A, B=None, C=None, D=None, z=None, delta_bias=None,
                                   delta_softplus=False, discretization="zoh", scale=1.0, *, fixed_C=None):
    """:func:`selective_state_step` in PyTorch. Returns (y (Bt, K), h' (Bt, K, n))."""
    fixed_C = _check_step(h, u, delta, A, B, C, D, z, delta_bias, discretization, scale, fixed_C)
    dt = _activate_delta(delta, delta_bias, delta_softplus)
    return _reference_step(h, u, dt, A, B, C if fixed_C else C.unsqueeze(1), D, z, discretization, scale)


def diagonal_scan_reference(u, delta, A, gain=None, delta_bias=None, delta_softplus=False, discretization="zoh"):
    """:func:`diagonal_scan` as a loop over the steps."""
    _check_diagonal(u, delta, A, gain, delta_bias, discretization)
    batch, length, K = u.shape
    dt = _activate_delta(delta, delta_bias, delta_softplus)
    dts = dt.unbind(1) if dt.dim() == 3 else [dt] * length
    gains = gain.unbind(1) if gain is not None else [None] * length
    h = torch.zeros((batch, K), dtype=A.dtype if A.is_complex() else u.dtype, device=u.device)
    out = []
    for u_t, dt_t, gain_t in zip(u.unbind(1), dts, gains):
        A_bar, F = discretize(discretization, A, dt_t)
        h = A_bar * h + F * u_t
        out.append(h if gain_t is None else gain_t * h)
    return torch.stack(out, 1)
