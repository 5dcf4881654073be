"""FLAYER (Chen et al., "Optimizing Personalized Federated Learning through Adaptive
Layer-Wise Learning", IJCAI 2025): settings (settings.py, no torch), client side and server
side; flayer.algorithm.method registers them as "flayer".

FLAYER personalizes layer by layer. Each round, for every client:
  1. Local initialization. Every tensor is copied from the global model, except the top-P
     tensors (the classifier's weight and bias for the CNN), which are mixed:
     local = a_k * local + (1 - a_k) * global, where a_k is the client's accuracy at its last
     evaluation (0 before the first). Then one epoch in which only the top-P tensors learn
     (the "head pass"). The evaluated personalized model is this initialized model.
  2. Adaptive learning rates. Local SGD with one rate per layer: at the first mini-batch of
     each epoch the middle layers get c * eta * (1 + (l / s) ln(1 + 1 / ||grad||)) (averaged
     over the layer's tensors); the input layer keeps eta, the head eta * h (h = 1/5).
  3. Masked upload. Tensor j of J withholds the fraction 1 - min(max(j / J, 0.1), 0.9) of its
     least-changed elements, per k x k kernel for convolutions and over the whole tensor for
     1-D ones; 2-D weights and the last two tensors go in full. Only the kept values travel,
     with an explicit bit-packed mask, so a real zero weight is never mistaken for
     "withheld". For the CNN this saves about 7% of the upload (6.6% measured: 2.18 MB
     instead of 2.33 MB per client and round), because fc1's 2-D weight, 90% of the model, is
     always sent in full.
  4. Mask-aware aggregation. Each element is the sample-weighted mean over the clients that
     uploaded it; an element nobody uploaded keeps its previous global value.
A layer is a top-level child module that owns parameters (flayer.nn.layers, the one place that
decides it): the CNN has 4 layers and 8 tensors.

Switches: `local_init`, `adaptive_lr` and `masked_upload` turn the three components off one by
one (a plain copy of the global model, one rate for every layer, every tensor in full). With
all three off FLAYER gives exactly FedAvg's per-round metrics for the same seed (a test checks
every column but round_seconds). `P`, `s`, `c` and `head_rate` default to the reference value
for the run's model (settings.py, REFERENCE: CNN P 2, c 20; ResNet-18 P 4, c 1; fastText P 2,
c 1; all s = layers - 1, head_rate 0.2; any other model the same but c 1).

Eager and lazy sync. The reference (`sync=eager`, the default) initializes every client from
each new global model, whether it trains or is evaluated that round or not, so a round's cost
grows with all clients. With `sync=lazy` a client that neither trains nor is evaluated gets no
message; when it next works it takes in the newest global model only, mixing it with the a_k
of its last evaluation (which may be rounds old), and the versions in between are never mixed
in (their head passes never run). Where every client works every round (join_ratio=1,
eval_fraction=1, the defaults) lazy gives eager's numbers exactly (a test checks).

Accuracy source. `accuracy_source=val` measures a_k on a hold-out of the client's training
data (`val_fraction`, 10%) instead of its test data; summaries record which one was used.

Reference quirks. `reference_quirks=true` reproduces the reference implementation where it has
evident bugs: its starting learning-rate groups (CNN: eta, 30 eta, 40 eta, eta / 5, seen only
by head passes before a client's first training) and withholding whole 1x1 convolution kernels
(so they are never uploaded; by default the 1-D rule applies per output channel instead).
Whatever this setting, training data is shuffled every epoch (seeded) and every test sample is
evaluated, where the reference drops the last incomplete test batch.

A client that arrives late (`new_clients`) has no accuracy yet: its local initialization mixes
with a_k = 0 and so takes the global model whole, then makes its head pass and
`new_client_epochs` epochs of FLAYER's local training (the initial per-layer rates, adapted as
in training); it is evaluated with that model and keeps nothing. With no epochs it is
evaluated with the global model itself (no head pass).
"""
