"""Every record, config and state key that crosses a message or persists on a client."""

# Records in a message's content
ARRAYS = "arrays"  # ArrayRecord: global model (down) or uploaded values (up)
MASKS = "masks"  # ArrayRecord: bit-packed masks of tensors uploaded in part
CONFIG = "config"  # ConfigRecord: per-round instructions
METRICS = "metrics"  # MetricRecord: reply metrics

# ConfigRecord keys (server -> client)
SERVER_ROUND = "server-round"
MODEL_VERSION = "model-version"
DO_EVALUATE = "evaluate"

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
