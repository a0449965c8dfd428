"""The model's V2 (Open Inference Protocol) contract, as plain constants shared by server and client.

Inputs (exactly one per request):
  payload  FP32  [N, 224, 224, 3]  RGB in [0, 1], preprocessed by the client (the seed's request)
  images   BYTES [N]               encoded JPEG/PNG files: raw bytes over gRPC, base64 strings in REST JSON
Outputs (in this order; the seed's client reads outputs[0]):
  class_index    INT64 [N]     argmax over the six classes
  class_code     BYTES [N]     cbb, cbsd, cgm, cmd, healthy or unknown
  probabilities  FP32  [N, 6]  softmax probabilities in `cassava.labels` order

No MLServer import here: the client imports this module next to tritonclient's gRPC stubs.
"""

from __future__ import annotations

from cassava.labels import NUM_CLASSES

MODEL_NAME = "cassava"

TENSOR_INPUT = "payload"
IMAGES_INPUT = "images"
OUTPUT_INDEX = "class_index"
OUTPUT_CODE = "class_code"
OUTPUT_PROBABILITIES = "probabilities"

#: (name, datatype, shape) with -1 for the batch dimension
INPUT_SPECS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    (TENSOR_INPUT, "FP32", (-1, 224, 224, 3)),
    (IMAGES_INPUT, "BYTES", (-1,)),
)
OUTPUT_SPECS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    (OUTPUT_INDEX, "INT64", (-1,)),
    (OUTPUT_CODE, "BYTES", (-1,)),
    (OUTPUT_PROBABILITIES, "FP32", (-1, NUM_CLASSES)),
)

MiB = 1024 * 1024
# gRPC's default 4 MiB cap is below the seed's own request: 16 images as float32 are 9.6 MB. 64 MiB
# holds a full batch of 64 preprocessed images (38.5 MB as float32) with room for framing.
GRPC_MAX_MESSAGE_LENGTH = 64 * MiB
