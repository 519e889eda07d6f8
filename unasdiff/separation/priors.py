"""K source priors acting together on x [B, K, L].

A prior is any callable `(x_t [B, L], t [B], label [B] | None) -> eps [B, L]`, with t the network
time input (5 x step for T = 200): a trained network or an analytic model. Sources that share one
prior object are evaluated in one batched call.

Classifier-free guidance (Ho & Salimans, 2022) with weight w: a source with a label gets
eps_label + w (eps_label - eps_null), the null row being the class that label dropout trained; w = 0 is
the plain conditional prior (the reference's only choice), sources without a label are unchanged.

A source without a label (None) gets the prior's null row where the prior has several classes (the
unconditional prior that label dropout trains), and label 0 where it has one class (the only class it was
trained on). The reference passes label 0 for None everywhere; an explicit 0 still does that.
"""

from collections.abc import Callable, Sequence

import torch

Prior = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def unlabelled_row(prior: Prior) -> int:
    """The label a source without one gets: the null row of a prior of several classes, else class 0."""
    if getattr(prior, "num_classes", 1) > 1 and getattr(prior, "null_label", None) is not None:
        return int(prior.null_label)
    return 0


class SourcePriors:
    def __init__(self, priors: Sequence[Prior], labels: Sequence[int | None] | None = None,
                 label_guidance: float = 0.0):
        if len(priors) == 0:
            raise ValueError("at least one prior is needed")
        labels = list(labels) if labels is not None else [None] * len(priors)
        if len(labels) != len(priors):
            raise ValueError(f"{len(priors)} priors but {len(labels)} labels")
        self.priors, self.labels, self.label_guidance = list(priors), labels, float(label_guidance)
        if self.label_guidance:
            unconditional = sorted({type(p).__name__ for p, lab in zip(priors, labels)
                                    if lab is not None and getattr(p, "null_label", None) is None})
            if unconditional:
                raise ValueError(f"label_guidance needs priors with a null class (trained with label dropout); "
                                 f"{', '.join(unconditional)} has none: set label_guidance=0")
        # one call per distinct prior object: (prior, source indices, labels of those sources or None,
        # which of them carry a label of their own)
        self.groups = []
        for prior in {id(p): p for p in priors}.values():
            idx = [k for k, p in enumerate(priors) if p is prior]
            group_labels = [labels[k] for k in idx]
            default = unlabelled_row(prior)
            label_tensor = None if all(lab is None for lab in group_labels) and default == 0 else torch.tensor(
                [default if lab is None else int(lab) for lab in group_labels])
            self.groups.append((prior, idx, label_tensor, torch.tensor([lab is not None for lab in group_labels])))

    def __len__(self) -> int:
        return len(self.priors)

    def eps(self, x: torch.Tensor, time_input: int) -> torch.Tensor:
        """Predicted noise of every source: x [B, K, L] -> [B, K, L]."""
        batch, _, length = x.shape
        sources = x.unbind(1)  # views: the gradient goes back by one stack, not by indexing into zeros
        pieces = [None] * len(self)
        for prior, idx, labels, labelled in self.groups:
            flat = sources[idx[0]] if len(idx) == 1 else torch.stack([sources[k] for k in idx], 1).flatten(0, 1)
            t = torch.full((flat.shape[0],), time_input, device=x.device, dtype=torch.long)
            lab = None if labels is None else labels.to(x.device).repeat(batch)
            if lab is None or not self.label_guidance:
                eps = prior(flat, t, lab)
            else:  # conditional and null-label predictions in one call
                both = prior(torch.cat([flat, flat]), torch.cat([t, t]),
                             torch.cat([lab, torch.full_like(lab, prior.null_label)]))
                conditional, null = both.chunk(2)
                guided = labelled.to(x.device).repeat(batch)[:, None]
                eps = torch.where(guided, conditional + self.label_guidance * (conditional - null), conditional)
            eps = eps.reshape(batch, len(idx), length)
            for j, k in enumerate(idx):
                pieces[k] = eps[:, j]
        return torch.stack(pieces, dim=1)
