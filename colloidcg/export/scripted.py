"""TorchScript versions of a trained model's drift, noise, energy and structural encoder.

:class:`~colloidcg.core.model.MetriplecticModel` is written for clarity in eager PyTorch
(dataclass states, a namespace of intermediate results, ``torch.enable_grad`` blocks),
which ``torch.jit.script`` cannot compile, and its neighbour search uses SciPy. So the
exported modules are separate, scriptable implementations of the same equations that
carry copies of the trained weights. :func:`colloidcg.export.bundle.export_bundle`
checks, before it writes anything, that every scripted function reproduces the model's
own on a test configuration (to 1e-9 relative in float64), so a bundle can never hold
modules that disagree with the model.

Everything here needs only ``torch``: a user loads the modules with ``torch.jit.load``
without colloidcg installed. Units are the model's: lengths um, times s (see
:data:`SIGNATURES` for every input and output).
"""

from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.encoder import invariant_features
from ..core.graph import minimum_image

#: Inputs and outputs of each exported module, with shapes and units; written into the
#: bundle's JSON and docs/export.md. N particles, d dimensions (2 or 3), n_s entropic
#: variables per particle, P pairs.
COMMON_INPUTS = {
    "r": "(N, d) positions, um",
    "v": "(N, d) velocities, um/s",
    "S": "(N, n_s) entropic variables, dimensionless (units of k_B)",
    "pairs": "(P, 2) int64 particle index pairs i < j, every pair closer than the cutoff "
             "(from .pairs(r, box); extra pairs farther apart contribute exactly 0)",
    "box": "(d,) periodic box lengths in um, or None for open boundaries",
    "size": "optional (N,) per-particle sizes in the units of the tracks column the model was "
            "trained with (bundle config: size_column, size_scale); required by models with "
            "per-particle sizes (size_scale > 0), whose pair ranges are h (a_i + a_j) / 2, "
            "a = min(size / size_scale, 1); ignored by models without",
}
SIGNATURES = {
    "drift.pt": {
        "call": "forward(r, v, S, pairs, box=None, size=None) -> (drdt, dvdt, dSdt)",
        "inputs": COMMON_INPUTS,
        "outputs": {"drdt": "(N, d) um/s (= v)",
                    "dvdt": "(N, d) um/s^2: conservative force / m, friction and the Ito term",
                    "dSdt": "(N, n_s) 1/s: frictional heating, heat conduction and the Ito term"},
        "meaning": "deterministic part of dx = [L dE/dx + M dS/dx + k_B div M] dt + dx~",
    },
    "noise.pt": {
        "call": "forward(r, v, S, pairs, dt, box=None, size=None) -> cov_v; "
                "sample(r, v, S, pairs, dt, xi_pair, xi_particle, box=None, size=None) -> (dv, dS)",
        "inputs": {**COMMON_INPUTS, "dt": "time step, s (float)",
                   "xi_pair": "(P, d + 2) independent standard normal numbers",
                   "xi_particle": "(N, d) independent standard normal numbers (unused when "
                                  "the model has no substrate friction)"},
        "outputs": {"cov_v": "(N, d, d) um^2/s^2: covariance of each particle's velocity "
                             "increment over dt, 2 k_B M_vv dt (the noise amplitude)",
                    "dv": "(N, d) um/s: one velocity noise increment over dt",
                    "dS": "(N, n_s): one entropy noise increment over dt"},
        "meaning": "fluctuation-dissipation noise dx~ with <dx~ dx~^T> = 2 k_B M dt",
    },
    "energy.pt": {
        "call": "forward(r, v, S, pairs, box=None, size=None) -> (E, e)",
        "inputs": COMMON_INPUTS,
        "outputs": {"E": "() total energy, model energy unit (mass unit x um^2/s^2; k_B = 1)",
                    "e": "(N,) per-particle energy m|v|^2/2 + U(S, V) [+ half of each of its "
                         "pairs' energy phi] [+ deviatoric part], same unit"},
        "meaning": "E = sum_i m|v_i|^2/2 + U(S_i, V_i) [+ sum_pairs phi(r_ij)] [+ E_dev]; "
                   "conserved by the deterministic dynamics",
    },
    "encoder.pt": {
        "call": "forward(r, pairs, box=None) -> S",
        "inputs": {k: COMMON_INPUTS[k] for k in ("r", "pairs", "box")},  # no size: S0 from structure
        "outputs": {"S": "(N, n_s) initial entropic variables from the local structure"},
        "meaning": "rotation-, translation- and permutation-invariant structural encoder",
    },
}
PAIRS_METHOD = ("pairs(r, box=None) -> (P, 2) int64: every pair i < j closer than the cutoff "
                "(all-pairs search in blocks of rows, O(N^2) time, O(block x N) memory)")


def _scatter(n: int, idx: Tensor, val: Tensor) -> Tensor:
    shape = [n] + list(val.shape[1:])
    return torch.zeros(shape, dtype=val.dtype, device=val.device).index_add_(0, idx, val)


class ScriptedCore(nn.Module):
    """The model's equations in TorchScript-compatible form, weights copied from ``model``.

    Mirrors :meth:`MetriplecticModel.compute`, ``drift``, ``noise``,
    ``velocity_covariance``, ``total_energy`` and ``initial_S`` (see
    :mod:`colloidcg.core.model` for the physics). Untabulated pair functions are used.
    """

    def __init__(self, model):
        super().__init__()
        c = model.config
        ref = next(model.parameters())
        dt = ref.dtype

        def t(x) -> Tensor:
            return x.detach().clone().to(dtype=dt, device="cpu")

        self.dim = int(c.dim)
        self.n_s = int(c.n_s)
        self.cutoff = float(c.cutoff)
        self.k_B = float(c.k_B)
        self.tau = float(c.tau)
        self.mass_scale = float(c.mass_scale)
        self.theta_ref = float(c.theta_ref)
        self.volume_ref = float(c.volume_ref)
        # scale of U's volume term (a fixed calibration constant; 1 in models without it)
        self.stiffness = float(getattr(c, "stiffness", 1.0))
        self.fabric_ref = float(c.fabric_ref)
        self.substrate = bool(c.substrate)
        self.deviatoric = bool(c.deviatoric)
        # per-particle sizes: reference size (0 = one range h for all pairs)
        self.size_scale = float(getattr(c, "size_scale", 0.0))
        # kernel W(q) = sum_k softplus(raw_k) (1 - q)_+^p_k
        self.register_buffer("k_raw", t(model.kernel.raw))
        self.register_buffer("k_powers", t(model.kernel.powers))
        # pair energy phi(q) = sum_k softplus(raw_k) (1 - q / sigmoid(raw_b_k))_+^2, scaled by
        # theta_ref * stiffness (n_pair = 0: none)
        self.n_pair = int(getattr(c, "n_pair", 0))
        pot = model.pair_potential if self.n_pair > 0 else None
        self.register_buffer("pp_raw", t(pot.raw) if pot is not None else torch.zeros(0, dtype=dt))
        self.register_buffer("pp_raw_b", t(pot.raw_b) if pot is not None else torch.zeros(0, dtype=dt))
        # internal energy U (input-convex network); every hidden layer has the same width,
        # so the per-layer weights stack into single tensors
        en = model.energy
        self.n_layers = len(en.wx)
        self.register_buffer("u_wx", torch.stack([t(w) for w in en.wx]))
        self.register_buffer("u_b", torch.stack([t(b) for b in en.b]))
        if len(en.wz):
            self.register_buffer("u_wz", torch.stack([t(w) for w in en.wz]))
        else:
            self.register_buffer("u_wz", torch.zeros(1, 1, 1, dtype=dt))
        self.register_buffer("u_out_z", t(en.out_z))
        self.register_buffer("u_out_x", t(en.out_x))
        self.register_buffer("u_lin_s", t(en.lin_s))
        self.register_buffer("u_lam", t(en.lam))
        self.register_buffer("u_mu", t(en.mu))
        # pair coefficients A, B, C and the encoder's network: plain Linear/SiLU stacks
        self.pair_net = copy.deepcopy(model.pair.mlp.net).to(device="cpu", dtype=dt)
        enc = model.encoder
        self.enc_net = copy.deepcopy(enc.mlp.net).to(device="cpu", dtype=dt)
        self.register_buffer("enc_centres", t(enc.centres))
        self.register_buffer("enc_mean", t(enc.f_mean))
        self.register_buffer("enc_std", t(enc.f_std))
        self.enc_width = float(enc.width_rbf)
        # scalars
        self.register_buffer("raw_mass", t(model.raw_mass))
        self.register_buffer("raw_w", t(model.raw_w))
        self.register_buffer("raw_alpha", t(model.raw_alpha))
        zero = torch.zeros((), dtype=dt)
        self.register_buffer("raw_gamma0", t(model.raw_gamma0) if c.substrate else zero.clone())
        self.register_buffer("raw_alpha0", t(model.raw_alpha0) if c.substrate else zero.clone())
        self.register_buffer("raw_shear", t(model.raw_shear) if c.deviatoric else zero.clone())
        self.pair_block = 1024

    # ------------------------------------------------------------------ neighbours
    @torch.jit.export
    def pairs(self, r: Tensor, box: Optional[Tensor] = None) -> Tensor:
        """All pairs i < j with |r_ij| < cutoff (minimum image with a box), sorted by i, j."""
        n = r.shape[0]
        out: List[Tensor] = []
        idx = torch.arange(n, device=r.device)
        for start in range(0, n, self.pair_block):
            stop = min(n, start + self.pair_block)
            rij = minimum_image(r[start:stop].unsqueeze(1) - r.unsqueeze(0), box)
            d2 = (rij * rij).sum(-1)
            close = (d2 < self.cutoff * self.cutoff) & (idx[start:stop].unsqueeze(1) < idx.unsqueeze(0))
            ij = torch.nonzero(close)
            out.append(torch.stack([ij[:, 0] + start, ij[:, 1]], 1))
        if len(out) == 0:
            return torch.zeros(0, 2, dtype=torch.long, device=r.device)
        return torch.cat(out, 0)

    # ------------------------------------------------------------------ learned pieces
    def kernel(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        c = F.softplus(self.k_raw)
        p = self.k_powers
        base = torch.clamp(1.0 - q, min=0.0).unsqueeze(-1)
        w = (c * base ** p).sum(-1)
        dw = -(c * p * base ** (p - 1)).sum(-1)
        return w, dw

    def kernel_zero(self) -> Tensor:
        return F.softplus(self.k_raw).sum()

    def pair_energy(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        """Pair energy phi (P,) and d phi / dq (P,), energy units."""
        c = F.softplus(self.pp_raw)
        b = torch.sigmoid(self.pp_raw_b)
        gap = torch.clamp(1.0 - q.unsqueeze(-1) / b, min=0.0)
        scale = self.theta_ref * self.stiffness
        return scale * (c * gap.square()).sum(-1), -scale * (2.0 * c * gap / b).sum(-1)

    def coefficients(self, q: Tensor) -> Tensor:
        env = torch.clamp(1.0 - q, min=0.0).square()
        return F.softplus(self.pair_net(q.unsqueeze(-1))) * env.unsqueeze(-1)

    def internal_energy(self, S: Tensor, v_red: Tensor) -> Tensor:
        x = torch.cat([S, -v_red.unsqueeze(-1)], dim=-1)
        z = torch.zeros(0)
        for layer in range(self.n_layers):
            pre = x @ F.softplus(self.u_wx[layer]).T + self.u_b[layer]
            if layer > 0:
                pre = pre + z @ F.softplus(self.u_wz[layer - 1]).T
            z = F.softplus(pre)
        u = z @ F.softplus(self.u_out_z) + x @ F.softplus(self.u_out_x)
        u = u + S @ F.softplus(self.u_lin_s) + F.softplus(S) @ F.softplus(self.u_lam)
        u = u - self.stiffness * F.softplus(self.u_mu) * torch.log(v_red)
        return u

    def mass(self) -> Tensor:
        return self.mass_scale * F.softplus(self.raw_mass)

    def heat_weights(self) -> Tensor:
        return torch.softmax(self.raw_w, 0)

    def particle_terms(self, S: Tensor, dens: Tensor) -> List[Tensor]:
        """[U (N,), T (N, n_s), P = dU/d dens (N,), theta (N,), kappa (N,)].

        Needs autograd; grad mode is switched on here (TorchScript has no enable_grad)."""
        S_in = S if S.requires_grad else S.detach().requires_grad_(True)
        d_in = dens if dens.requires_grad else dens.detach().requires_grad_(True)
        u = self.theta_ref * self.internal_energy(S_in, 1.0 / (d_in * self.volume_ref))
        g1 = torch.autograd.grad([u.sum()], [S_in, d_in], create_graph=True)
        T = g1[0]
        P = g1[1]
        assert T is not None and P is not None
        w = self.heat_weights()
        theta = T @ w
        g2 = torch.autograd.grad([theta.sum()], [S_in], create_graph=True)[0]
        assert g2 is not None
        kappa = g2 @ w
        return [u, T, P, theta, kappa]

    def pair_range(self, pairs: Tensor, size: Optional[Tensor], like: Tensor) -> Tensor:
        """(P,) range of every pair: h (a_i + a_j) / 2, a = min(size / size_scale, 1), for a
        model with per-particle sizes; h otherwise."""
        if self.size_scale <= 0.0:
            return torch.full([pairs.shape[0]], self.cutoff, dtype=like.dtype, device=like.device)
        if size is None:
            raise RuntimeError("size: this model was trained with per-particle sizes; pass size (N,)")
        a = (size.to(like.dtype) / self.size_scale).clamp(min=1e-3, max=1.0)
        return self.cutoff * 0.5 * (a[pairs[:, 0]] + a[pairs[:, 1]])

    def deviatoric_energy(self, r: Tensor, pairs: Tensor, box: Optional[Tensor],
                          size: Optional[Tensor] = None) -> Tensor:
        """Per-particle theta_ref stiffness mu / 2 |dev F_i|^2, F_i = sum_j W e e^T / fabric_ref."""
        n = r.shape[0]
        d = r.shape[1]
        i = pairs[:, 0]
        j = pairs[:, 1]
        rij = minimum_image(r[i] - r[j], box)
        dist = torch.linalg.vector_norm(rij, dim=-1).clamp_min(1e-12 * self.cutoff)
        e = rij / dist.unsqueeze(-1)
        W, _ = self.kernel(dist / self.pair_range(pairs, size, dist))
        ee = (e.unsqueeze(-1) * e.unsqueeze(-2)) * W.view(-1, 1, 1)
        fab = (_scatter(n, i, ee) + _scatter(n, j, ee)) / self.fabric_ref
        tr = fab.diagonal(dim1=-2, dim2=-1).sum(-1)
        dev = fab - torch.eye(d, dtype=r.dtype, device=r.device) * (tr / d).view(-1, 1, 1)
        mu = F.softplus(self.raw_shear)
        return self.theta_ref * self.stiffness * mu / 2 * dev.square().sum([-1, -2])

    def deviatoric_force(self, r: Tensor, pairs: Tensor, box: Optional[Tensor],
                         size: Optional[Tensor] = None) -> Tensor:
        r_in = r if r.requires_grad else r.detach().requires_grad_(True)
        e_dev = self.deviatoric_energy(r_in, pairs, box, size).sum()
        g = torch.autograd.grad([e_dev], [r_in], create_graph=True)[0]
        assert g is not None
        return -g

    # ------------------------------------------------------------------ compute
    def compute(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor,
                box: Optional[Tensor], size: Optional[Tensor] = None) -> List[Tensor]:
        """Intermediate results shared by drift, noise and energy (see ``_names``)."""
        n = r.shape[0]
        i = pairs[:, 0]
        j = pairs[:, 1]
        rij = minimum_image(r[i] - r[j], box)
        dist = torch.linalg.vector_norm(rij, dim=-1).clamp_min(1e-12 * self.cutoff)
        e = rij / dist.unsqueeze(-1)
        hr = self.pair_range(pairs, size, dist)
        q = dist / hr
        W, dW = self.kernel(q)
        coef = self.coefficients(q)
        dens = self.kernel_zero() + _scatter(n, i, W) + _scatter(n, j, W)
        terms = self.particle_terms(S, dens)
        U, T, Pd, theta, kappa = terms[0], terms[1], terms[2], terms[3], terms[4]
        dEdr = (Pd[i] + Pd[j]) * dW / hr
        if self.n_pair > 0:
            dEdr = dEdr + self.pair_energy(q)[1] / hr
        fpair = -dEdr.unsqueeze(-1) * e
        force = _scatter(n, i, fpair) - _scatter(n, j, fpair)
        if self.deviatoric:
            force = force + self.deviatoric_force(r, pairs, box, size)
        th_i = theta[i]
        th_j = theta[j]
        th_bar = 2.0 * th_i * th_j / (th_i + th_j)
        dbar_i = th_bar.square() / (2.0 * th_i.square())
        dbar_j = th_bar.square() / (2.0 * th_j.square())
        alpha = 2.0 * torch.tanh(self.raw_alpha)
        gscale = self.mass_scale / self.tau
        ratio = th_bar / self.theta_ref
        sp = gscale * coef[:, 0] * th_bar * ratio ** alpha[0]
        dsp = (1.0 + alpha[0]) * sp / th_bar
        sb = gscale * coef[:, 1] * th_bar * ratio ** alpha[1]
        dsb = (1.0 + alpha[1]) * sb / th_bar
        c2 = coef[:, 2] / self.tau * th_i * th_j * ratio ** alpha[2]
        c2_i = c2 / th_i + alpha[2] * c2 / th_bar * dbar_i
        c2_j = c2 / th_j + alpha[2] * c2 / th_bar * dbar_j
        if self.substrate:
            g0 = self.mass_scale / self.tau * F.softplus(self.raw_gamma0)
            a0 = 2.0 * torch.tanh(self.raw_alpha0)
            s0 = g0 * theta * (theta / self.theta_ref) ** a0
            s0p = (1.0 + a0) * s0 / theta
        else:
            s0 = torch.zeros_like(theta)
            s0p = torch.zeros_like(theta)
        return [e, dens, U, T, theta, kappa, force, th_i, th_j, th_bar,
                sp, dsp * dbar_i, dsp * dbar_j, sb, dsb * dbar_i, dsb * dbar_j,
                c2, c2_i, c2_j, s0, s0p, v[i] - v[j]]

    # ------------------------------------------------------------------ drift
    @torch.jit.export
    def drift(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor,
              box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        grad_on = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        ns = self.compute(r, v, S, pairs, box, size)
        e, theta, kappa, force = ns[0], ns[4], ns[5], ns[6]
        th_i, th_j, th_bar = ns[7], ns[8], ns[9]
        sp, sp_i, sp_j, sb, sb_i, sb_j = ns[10], ns[11], ns[12], ns[13], ns[14], ns[15]
        c2, c2_i, c2_j, s0, s0p, vij = ns[16], ns[17], ns[18], ns[19], ns[20], ns[21]
        n = r.shape[0]
        d = r.shape[1]
        i = pairs[:, 0]
        j = pairs[:, 1]
        m = self.mass()
        w = self.heat_weights()
        k_i = kappa[i]
        k_j = kappa[j]
        ev = (e * vij).sum(-1)
        par_v = e * ev.unsqueeze(-1)
        perp_v = vij - par_v
        q3_par = ev.square()
        q3_perp = (vij.square().sum(-1) - q3_par).clamp_min(0.0)
        fv = -(sp / th_bar).unsqueeze(-1) * perp_v - (sb / th_bar).unsqueeze(-1) * par_v
        heat = (sp * q3_perp + sb * q3_par) / (2.0 * th_bar)
        sdot_i = heat / th_i
        sdot_j = heat / th_j
        cond = c2 * (1.0 / th_i - 1.0 / th_j)
        sdot_i = sdot_i + cond / th_i
        sdot_j = sdot_j - cond / th_j
        kb = self.k_B
        if kb != 0.0:
            fam_s2 = [sp, sb]
            fam_i = [sp_i, sb_i]
            fam_j = [sp_j, sb_j]
            fam_q1 = [perp_v, par_v]
            fam_q2 = [float(d - 1), 1.0]
            fam_q3 = [q3_perp, q3_par]
            for f in range(2):
                s2 = fam_s2[f]
                s2i = fam_i[f]
                s2j = fam_j[f]
                a_i = s2i / th_i - s2 / th_i ** 2
                a_j = s2j / th_j - s2 / th_j ** 2
                fv = fv - kb / 2.0 * (k_i * a_i + k_j * a_j).unsqueeze(-1) * fam_q1[f]
                b_i = s2i / th_i ** 2 - 2.0 * s2 / th_i ** 3
                b_j = s2j / th_j ** 2 - 2.0 * s2 / th_j ** 3
                c_i = s2i / (th_i * th_j) - s2 / (th_i ** 2 * th_j)
                c_j = s2j / (th_i * th_j) - s2 / (th_i * th_j ** 2)
                q2 = fam_q2[f]
                q3 = fam_q3[f]
                sdot_i = sdot_i + kb * (-q2 * s2 / (m * th_i) + q3 / 4.0 * (k_i * b_i + k_j * c_j))
                sdot_j = sdot_j + kb * (-q2 * s2 / (m * th_j) + q3 / 4.0 * (k_j * b_j + k_i * c_i))
            sdot_i = sdot_i + kb * (k_i * (c2_i / th_i ** 2 - 2 * c2 / th_i ** 3)
                                    - k_j * (c2_j / (th_i * th_j) - c2 / (th_i * th_j ** 2)))
            sdot_j = sdot_j + kb * (k_j * (c2_j / th_j ** 2 - 2 * c2 / th_j ** 3)
                                    - k_i * (c2_i / (th_i * th_j) - c2 / (th_i ** 2 * th_j)))
        dv = force / m + (_scatter(n, i, fv) - _scatter(n, j, fv)) / m
        sdot = _scatter(n, i, sdot_i) + _scatter(n, j, sdot_j)
        if self.substrate:
            v2 = v.square().sum(-1)
            dv = dv - (s0 / (m * theta)).unsqueeze(-1) * v
            sdot = sdot + s0 * v2 / theta ** 2
            if kb != 0.0:
                dv = dv - kb * (kappa * (s0p / theta - s0 / theta ** 2) / m).unsqueeze(-1) * v
                sdot = sdot + kb * (-d * s0 / (m * theta)
                                    + v2 * kappa * (s0p / theta ** 2 - 2 * s0 / theta ** 3))
        dS = sdot.unsqueeze(-1) * w
        torch.set_grad_enabled(grad_on)
        if not grad_on:
            return v, dv.detach(), dS.detach()
        return v, dv, dS

    # ------------------------------------------------------------------ noise
    @torch.jit.export
    def velocity_covariance(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, dt: float,
                            box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tensor:
        grad_on = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        ns = self.compute(r, v, S, pairs, box, size)
        e, sp, sb, s0 = ns[0], ns[10], ns[13], ns[19]
        n = r.shape[0]
        d = r.shape[1]
        eye = torch.eye(d, dtype=r.dtype, device=r.device)
        ee = e.unsqueeze(-1) * e.unsqueeze(-2)
        blk = sp.view(-1, 1, 1) * (eye - ee) + sb.view(-1, 1, 1) * ee
        cov = _scatter(n, pairs[:, 0], blk) + _scatter(n, pairs[:, 1], blk)
        if self.substrate:
            cov = cov + s0.view(-1, 1, 1) * eye
        m = self.mass()
        out = 2.0 * self.k_B * dt * cov / m ** 2
        torch.set_grad_enabled(grad_on)
        return out if grad_on else out.detach()

    @torch.jit.export
    def noise_sample(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, dt: float,
                     xi_pair: Tensor, xi_particle: Tensor,
                     box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        grad_on = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        ns = self.compute(r, v, S, pairs, box, size)
        e, theta, th_i, th_j = ns[0], ns[4], ns[7], ns[8]
        sp, sb, c2, s0, vij = ns[10], ns[13], ns[16], ns[19], ns[21]
        n = r.shape[0]
        d = r.shape[1]
        i = pairs[:, 0]
        j = pairs[:, 1]
        m = self.mass()
        w = self.heat_weights()
        amp = (2.0 * self.k_B * dt) ** 0.5
        xp = xi_pair[:, :d]
        xp = xp - e * (e * xp).sum(-1).unsqueeze(-1)
        X = sp.clamp_min(0).sqrt().unsqueeze(-1) * xp \
            + (sb.clamp_min(0).sqrt() * xi_pair[:, d]).unsqueeze(-1) * e
        X = amp * X
        hf = -0.5 * (vij * X).sum(-1)
        cz = amp * c2.clamp_min(0).sqrt() * xi_pair[:, d + 1]
        dv = (_scatter(n, i, X) - _scatter(n, j, X)) / m
        ds = _scatter(n, i, (hf + cz) / th_i) + _scatter(n, j, (hf - cz) / th_j)
        if self.substrate:
            X0 = amp * s0.clamp_min(0).sqrt().unsqueeze(-1) * xi_particle
            dv = dv + X0 / m
            ds = ds - (v * X0).sum(-1) / theta
        dS = ds.unsqueeze(-1) * w
        torch.set_grad_enabled(grad_on)
        if not grad_on:
            return dv.detach(), dS.detach()
        return dv, dS

    # ------------------------------------------------------------------ energy
    @torch.jit.export
    def energy(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor,
               box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        grad_on = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        n = r.shape[0]
        i = pairs[:, 0]
        j = pairs[:, 1]
        rij = minimum_image(r[i] - r[j], box)
        dist = torch.linalg.vector_norm(rij, dim=-1).clamp_min(1e-12 * self.cutoff)
        q = dist / self.pair_range(pairs, size, dist)
        W, _ = self.kernel(q)
        dens = self.kernel_zero() + _scatter(n, i, W) + _scatter(n, j, W)
        U = self.particle_terms(S, dens)[0]
        e = 0.5 * self.mass() * v.square().sum(-1) + U
        if self.n_pair > 0:
            half = 0.5 * self.pair_energy(q)[0]          # each pair's energy, split evenly
            e = e + _scatter(n, i, half) + _scatter(n, j, half)
        if self.deviatoric:
            e = e + self.deviatoric_energy(r, pairs, box, size)
        E = e.sum()
        torch.set_grad_enabled(grad_on)
        if not grad_on:
            return E.detach(), e.detach()
        return E, e

    # ------------------------------------------------------------------ encoder
    @torch.jit.export
    def initial_S(self, r: Tensor, pairs: Tensor, box: Optional[Tensor] = None) -> Tensor:
        f = invariant_features(r, pairs, self.cutoff, box, self.enc_centres, self.enc_width)
        return self.enc_net((f - self.enc_mean) / self.enc_std)


class _Exported(nn.Module):
    """What every exported module shares: the scripted core and its pair search
    ``pairs(r, box=None) -> (P, 2)``."""

    def __init__(self, core: ScriptedCore):
        super().__init__()
        self.core = core

    @torch.jit.export
    def pairs(self, r: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.core.pairs(r, box)


class Drift(_Exported):
    """drift.pt: (r, v, S, pairs, box) -> (dr/dt, dv/dt, dS/dt)."""

    def forward(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor,
                box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        return self.core.drift(r, v, S, pairs, box, size)


class Noise(_Exported):
    """noise.pt: velocity-noise covariance (forward) and one noise increment (sample)."""

    def forward(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, dt: float,
                box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tensor:
        return self.core.velocity_covariance(r, v, S, pairs, dt, box, size)

    @torch.jit.export
    def sample(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, dt: float,
               xi_pair: Tensor, xi_particle: Tensor,
               box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return self.core.noise_sample(r, v, S, pairs, dt, xi_pair, xi_particle, box, size)


class Energy(_Exported):
    """energy.pt: (r, v, S, pairs, box) -> (total E, per-particle e)."""

    def forward(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor,
                box: Optional[Tensor] = None, size: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return self.core.energy(r, v, S, pairs, box, size)


class Encoder(_Exported):
    """encoder.pt: (r, pairs, box) -> initial S."""

    def forward(self, r: Tensor, pairs: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.core.initial_S(r, pairs, box)


MODULES = {"drift.pt": Drift, "noise.pt": Noise, "energy.pt": Energy, "encoder.pt": Encoder}


def script_modules(model) -> dict:
    """{file name: scripted module} for ``model`` (weights copied, CPU, model dtype)."""
    import warnings

    core = ScriptedCore(model)
    with warnings.catch_warnings():
        # torch 2.x marks TorchScript deprecated in favour of torch.export; TorchScript is
        # used because its files load with plain torch.jit.load, with dynamic N and P
        warnings.simplefilter("ignore", DeprecationWarning)
        return {name: torch.jit.script(cls(core)) for name, cls in MODULES.items()}
