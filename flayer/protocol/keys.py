"""Every record, config and state key that crosses a message or persists on a client."""

# Records in a message's content
ARRAYS = "arrays"  # ArrayRecord: global model (down) or uploaded values (up)
MASKS = "masks"  # ArrayRecord: bit-packed masks of tensors uploaded in part
CONFIG = "config"  # ConfigRecord: per-round instructions
METRICS = "metrics"  # MetricRecord: a node's answer to a query (which partition it holds)
SUM_NUM = "sum.num"  # ArrayRecord: an executor's weighted sum of its clients' uploads
SUM_DEN = "sum.den"  # ArrayRecord: the weight behind each summed tensor (or element)
UPLOAD_SPEC = "upload-spec"  # ConfigRecord: what a train reply must hold: name -> [kept, *shape]
CLIENT_PREFIX = "client."  # MetricRecord per client served: "client.<partition id>"
FAILED_PREFIX = "failed."  # ConfigRecord per client whose work failed: "failed.<partition id>"
RUN_ERROR = "run-error"  # ConfigRecord: the run cannot go on (its data or storage is damaged)

# ConfigRecord keys (server -> client)
SERVER_ROUND = "server-round"
MODEL_VERSION = "model-version"
COHORT = "cohort"  # the partition ids a message is for, served in this order
DO_EVALUATE = "evaluate"  # the partition ids of the cohort to evaluate (the rest only sync)
NEW_CLIENTS = "new-clients"  # the cohort's clients never trained (`new_clients`): evaluated
# as clients that arrive late, from nothing kept, keeping nothing
RUN_KEY = "run-key"  # the run folder's key: SuperNodes keep their state under it
CHECKPOINT_ROUND = "checkpoint-round"  # the round of the newest checkpoint (-1: none yet)

# MetricRecord keys (client -> server)
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
CORRECT = "correct"
NUM_TEST = "num-test"
ACCURACY = "accuracy"
AUC = "auc"
TEST_LOSS = "test-loss"
EVALUATED = "evaluated"
INIT_VERSION = "init-version"  # the global model version the client's model was set up from
STATE_HASH = "state-hash"  # hash of the personal state the client keeps after the message
UPLOAD_BYTES = "upload-bytes"  # what the client's own reply would have held (executors)
REASON = "reason"  # why a client's work failed

# Personal state in context.state: the method's arrays and metadata, and the app's bookkeeping
STATE_ARRAYS = "personal.arrays"
STATE_META = "personal.meta"
STATE_APP = "app.meta"  # ConfigRecord: {STATE_VERSION: the global version the state is set up from}
STATE_VERSION = "version"

# Run config under `flwr run` ([tool.flwr.app.config] in pyproject.toml)
RUN_OVERRIDES = "overrides"  # Hydra overrides as one string, e.g. "strategy=ditto num_rounds=5"
RUN_OUTPUT_DIR = "output-dir"  # where the ServerApp writes run directories

# Node config (simulation engine or flower-supernode --node-config)
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_DATA_DIR = "data-dir"  # the node's own data (instead of a partition of a named dataset)
NODE_STATE_DIR = "state-dir"  # node-local copy of its clients' personal state


def client_record(partition_id: int) -> str:
    return f"{CLIENT_PREFIX}{partition_id}"


def failed_record(partition_id: int) -> str:
    return f"{FAILED_PREFIX}{partition_id}"
