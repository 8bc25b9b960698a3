"""The score network (paper A.8): GemNet-dT-style periodic message passing.

* Input: atom-type embeddings plus a sinusoidal time embedding; edge inputs from both atoms,
  a radial Bessel basis and the cosines of the edge to the three lattice vectors (A39).
* The first interaction layer adds three-body messages (edge pairs sharing an atom, with a
  Legendre × Bessel angular basis), as GemNet-dT does; every layer updates edges then atoms.
* Per layer and edge, two MLP heads give scalars: ``f_e`` (force along the edge) and ``φ_e``
  (lattice). Coordinate scores are direct, non-conservative Cartesian forces
  ``Σ_e f_e d̂_e``; lattice scores follow A35–A36, ``Σ_l Σ_e φ_e / (|E| d_e²) d̃_e d̃_eᵀ``:
  symmetric, scale-invariant and rotation-equivariant. Type logits are ``H W`` (A31).
* Both continuous scores are divided by their noise scale at ``t`` (σ_t(n) V^(1/3) for the
  Cartesian coordinate score, the std of A29 for the lattice) so the layers work with O(1)
  numbers at every noise level.
* Conditioning hook (B44): with ``condition_dim > 0`` every layer is preceded by an adapter
  (2-layer MLP) and a zero-initialised, bias-free mix-in; a null condition leaves the network
  unconditional.

Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import DiffusionConfig, NetworkConfig
from model.crystal import NUM_CLASSES, CrystalBatch, segment_sum, types_to_classes
from model.diffusion.joint import CrystalDiffusion
from model.network.basis import RadialBessel, legendre, sinusoidal_embedding
from model.network.graph import PeriodicGraph, periodic_radius_graph, triplets
from model.network.statistics import DataStatistics


@dataclass
class ScoreOutput:
    """Scores of one batch: ``coords [N, 3]`` (Cartesian), ``lattice [B, 3, 3]`` (symmetric),
    ``type_logits [N, K]`` (unnormalised ``log p_θ(a_0 | M_t)``, A31)."""

    coords: Tensor
    lattice: Tensor
    type_logits: Tensor

    def fractional_coords(self, batch: CrystalBatch) -> Tensor:
        """The coordinate score w.r.t. fractional coordinates: ``coords @ latticeᵀ`` (from A2)."""
        return torch.einsum("nj,nij->ni", self.coords, batch.lattice[batch.batch])


def _mlp(dim_in: int, dim_hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.SiLU(), nn.Linear(dim_hidden, dim_out))


class InteractionLayer(nn.Module):
    """One message-passing layer: (three-body) → edge update → atom update → output heads."""

    def __init__(self, config: NetworkConfig, with_triplets: bool) -> None:
        super().__init__()
        hidden = config.hidden_dim
        self.with_triplets = with_triplets
        if with_triplets:
            self.triplet_down = nn.Linear(hidden, config.triplet_dim)
            self.triplet_basis = nn.Linear(
                config.num_radial * config.num_spherical, config.triplet_dim, bias=False
            )
            self.triplet_up = nn.Linear(config.triplet_dim, hidden)
        self.atom_norm = nn.LayerNorm(hidden)
        self.edge_update = _mlp(3 * hidden, hidden, hidden)
        self.edge_filter = nn.Linear(config.num_radial, hidden, bias=False)
        self.message_filter = nn.Linear(config.num_radial, hidden, bias=False)
        self.atom_update = _mlp(hidden, hidden, hidden)
        self.force_head = _mlp(hidden, hidden, 1)
        self.lattice_head = _mlp(hidden, hidden, 1)
        self.neighbor_scale = 1.0 / (config.avg_neighbors or config.max_neighbors) ** 0.5

    def forward(
        self,
        atoms: Tensor,
        edges: Tensor,
        graph: PeriodicGraph,
        radial: Tensor,
        triplet_index: tuple[Tensor, Tensor] | None,
        triplet_features: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.with_triplets and triplet_index is not None:
            outer, inner = triplet_index
            messages = self.triplet_down(edges)[inner] * self.triplet_basis(triplet_features)
            edges = edges + self.triplet_up(segment_sum(messages, outer, edges.shape[0]))
        normed = self.atom_norm(atoms)
        update = self.edge_update(
            torch.cat([normed[graph.center], normed[graph.neighbor], edges], -1)
        )
        edges = edges + update * self.edge_filter(radial)
        aggregated = segment_sum(edges * self.message_filter(radial), graph.center, atoms.shape[0])
        atoms = atoms + self.atom_update(aggregated * self.neighbor_scale)
        return (
            atoms,
            edges,
            self.force_head(edges).squeeze(-1),
            self.lattice_head(edges).squeeze(-1),
        )


class CrystalContext(nn.Module):
    """The crystal-wide channel: every atom receives an MLP of its crystal's mean atom state.

    A mean over the cell's atoms is invariant to rotations, translations, atom order and the
    choice of (super)cell, so the scores keep their symmetries.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = _mlp(hidden, hidden, hidden)

    def forward(self, atoms: Tensor, batch: CrystalBatch) -> Tensor:
        counts = batch.num_atoms.to(atoms.dtype)[:, None]
        mean = segment_sum(atoms, batch.batch, batch.num_crystals) / counts
        return atoms + self.mlp(self.norm(mean))[batch.batch]


class ScoreNetwork(nn.Module):
    """``s_θ(M_t, t[, g])`` → :class:`ScoreOutput` (see the module docstring)."""

    def __init__(self, network: NetworkConfig, diffusion: DiffusionConfig, max_atoms: int) -> None:
        super().__init__()
        self.config = network
        self.diffusion = CrystalDiffusion(diffusion)
        self.statistics = DataStatistics(max_atoms)
        hidden = network.hidden_dim
        self.atom_embedding = nn.Embedding(NUM_CLASSES, hidden)
        self.time_embedding = _mlp(network.time_dim, hidden, hidden)
        self.radial = RadialBessel(network.num_radial, network.cutoff)
        self.edge_input = _mlp(2 * hidden + network.num_radial + 3, hidden, hidden)
        self.layers = nn.ModuleList(
            InteractionLayer(network, with_triplets=(index == 0))
            for index in range(network.num_layers)
        )
        self.type_head = nn.Linear(hidden, NUM_CLASSES, bias=False)  # W of A31
        if network.crystal_context:
            self.contexts = nn.ModuleList(CrystalContext(hidden) for _ in range(network.num_layers))
        self.condition_dims = condition_dims(network)
        if self.condition_dims:
            # per property p and layer l: adapters[p][l] (2-layer MLP) and mixins[p][l]
            self.adapters = nn.ModuleList(
                nn.ModuleList(_mlp(dim, hidden, hidden) for _ in range(network.num_layers))
                for dim in self.condition_dims
            )
            self.mixins = nn.ModuleList(
                nn.ModuleList(
                    nn.Linear(hidden, hidden, bias=False) for _ in range(network.num_layers)
                )
                for _ in self.condition_dims
            )
            for per_layer in self.mixins:
                for mixin in per_layer:
                    nn.init.zeros_(mixin.weight)  # B44: the adapters start as the identity

    def forward(
        self,
        batch: CrystalBatch,
        t: Tensor,
        condition: Tensor | None = None,
        condition_mask: Tensor | None = None,
    ) -> ScoreOutput:
        """Scores at diffusion time ``t [B]``.

        ``condition [B, Σ condition_dims]`` holds the embedded properties ``g_p`` side by side;
        ``condition_mask`` (``[B]``, or ``[B, P]`` per property) marks which are given (False =
        null condition: that property's adapters add nothing, B44's indicator).
        """
        num_atoms_total = batch.atomic_numbers.shape[0]
        atom_batch = batch.batch
        # geometry stays in full precision under mixed-precision training (bf16 distances
        # would move edges across the cutoff)
        with torch.autocast(device_type=batch.lattice.device.type, enabled=False):
            graph = periodic_radius_graph(
                batch,
                self.config.cutoff,
                self.config.max_neighbors,
                self.config.max_images,
                shells=self.config.neighbor_shells,
            )
        atoms = self.atom_embedding(types_to_classes(batch.atomic_numbers))
        atoms = (
            atoms + self.time_embedding(sinusoidal_embedding(t, self.config.time_dim))[atom_batch]
        )
        radial = self.radial(graph.lengths)
        edge_lattice = batch.lattice[graph.crystal]
        cosines = torch.einsum("ej,eaj->ea", graph.vectors, edge_lattice) / (
            graph.lengths[:, None] * edge_lattice.norm(dim=-1)
        ).clamp_min(1e-9)  # A39
        edges = self.edge_input(
            torch.cat([atoms[graph.center], atoms[graph.neighbor], radial, cosines], -1)
        )
        trip = triplets(graph)
        triplet_features = (
            radial[trip.inner][:, :, None]
            * legendre(trip.cosines, self.config.num_spherical)[:, None, :]
        ).flatten(1)
        gates = self._condition_gates(condition, condition_mask, batch.num_crystals)

        unit = graph.vectors / graph.lengths.clamp_min(1e-6)[:, None]
        edges_per_crystal = torch.bincount(graph.crystal, minlength=batch.num_crystals).clamp_min(1)
        lattice_weight = 1.0 / (
            edges_per_crystal[graph.crystal] * graph.lengths.clamp_min(1e-3) ** 2
        )
        outer_products = graph.vectors[:, :, None] * graph.vectors[:, None, :]
        # per-edge outputs fade out at the cutoff: edges entering or leaving the graph change
        # the scores continuously
        fade = (
            self.radial.envelope(graph.lengths / self.config.cutoff)
            if self.config.smooth_outputs
            else None
        )
        forces = atoms.new_zeros((num_atoms_total, 3))
        stress = atoms.new_zeros((batch.num_crystals, 3, 3))
        for index, layer in enumerate(self.layers):
            if self.config.crystal_context:
                atoms = self.contexts[index](atoms, batch)
            if gates is not None:
                atoms = atoms + self._property_messages(index, condition, gates)[atom_batch]
            atoms, edges, force, phi = layer(
                atoms, edges, graph, radial, (trip.outer, trip.inner), triplet_features
            )
            if fade is not None:
                force, phi = force * fade, phi * fade
            forces = forces + segment_sum(force[:, None] * unit, graph.center, num_atoms_total)
            stress = stress + segment_sum(
                (phi * lattice_weight)[:, None, None] * outer_products,
                graph.crystal,
                batch.num_crystals,
            )  # A35–A36
        type_logits = self.type_head(atoms)
        t = t.to(forces.dtype)
        coord_scale = self.diffusion.coord_sigma(t, batch.num_atoms) * batch.volumes ** (1.0 / 3.0)
        lattice_scale = self.diffusion.lattice_std(t, batch.num_atoms)
        lattice_score = stress / lattice_scale[:, None, None]
        if self.config.lattice_prior_score:
            lattice_score = lattice_score + self._gaussian_lattice_score(batch, t)
        return ScoreOutput(
            coords=forces / coord_scale[atom_batch, None],
            lattice=lattice_score,
            type_logits=type_logits,
        )

    def _gaussian_lattice_score(self, batch: CrystalBatch, t: Tensor) -> Tensor:
        """The exact score of A29 if ``L_0`` were Gaussian around ``μ(n) I`` with spread
        ``κ n^(1/3)``: ``-(sym(L_t) − μ I) / (ᾱ_t κ² n^(2/3) + (1 − ᾱ_t) σ(n)²)``.

        An analytic preconditioner (as in EDM's skip connection): exact in the noise limit, so
        the learned A35–A36 term only models the data's departure from it. ``sym(L) =
        (LᵀL)^(1/2)`` is the symmetric polar factor (A27; ``L`` itself for symmetric lattices),
        so the term stays symmetric and rotation-equivariant.
        """
        dtype = batch.lattice.dtype
        gram = batch.lattice.mT @ batch.lattice
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        symmetric = (
            eigenvectors @ torch.diag_embed(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.mT
        )
        n = batch.num_atoms.to(dtype)
        mu = self.diffusion.lattice.limit_mean(
            batch.num_atoms, self.statistics.volume_per_atom.to(dtype)
        )
        alpha_bar = self.diffusion.lattice.alpha_bar(t)
        spread = self.statistics.lattice_spread.to(dtype) * n ** (1.0 / 3.0)
        limit_std = self.diffusion.lattice.limit_std(batch.num_atoms, dtype)
        variance = alpha_bar * spread**2 + (1 - alpha_bar) * limit_std**2
        eye = torch.eye(3, device=batch.lattice.device, dtype=dtype)
        return -(symmetric - mu[:, None, None] * eye) / variance[:, None, None]

    def _property_messages(self, layer: int, condition: Tensor, gates: Tensor) -> Tensor:
        """``Σ_p f_mixin(f_adapter(g_p)) · 1(p given)`` per crystal at ``layer`` (B44)."""
        total, start = None, 0
        for prop, dim in enumerate(self.condition_dims):
            g = condition[:, start : start + dim]
            start += dim
            message = self.mixins[prop][layer](self.adapters[prop][layer](g)) * gates[:, prop, None]
            total = message if total is None else total + message
        return total

    def _condition_gates(
        self, condition: Tensor | None, condition_mask: Tensor | None, num_crystals: int
    ) -> Tensor | None:
        if condition is None:
            return None
        if not self.condition_dims:
            raise ValueError("this network has no conditioning adapters (condition_dims empty)")
        width = sum(self.condition_dims)
        if condition.shape != (num_crystals, width):
            raise ValueError(
                f"condition must be [{num_crystals}, {width}], got {tuple(condition.shape)}"
            )
        num_properties = len(self.condition_dims)
        if condition_mask is None:
            condition_mask = torch.ones(num_crystals, dtype=torch.bool, device=condition.device)
        if condition_mask.dim() == 1:
            condition_mask = condition_mask[:, None].expand(num_crystals, num_properties)
        if condition_mask.shape != (num_crystals, num_properties):
            raise ValueError(
                f"condition_mask must be [{num_crystals}] or [{num_crystals}, {num_properties}], "
                f"got {tuple(condition_mask.shape)}"
            )
        return condition_mask.to(condition.dtype)  # the indicator of B44, per property


def condition_dims(network: NetworkConfig) -> list[int]:
    """Embedding lengths of the properties a network is conditioned on, in order."""
    if network.condition_dims:
        return list(network.condition_dims)
    return [network.condition_dim] if network.condition_dim > 0 else []
