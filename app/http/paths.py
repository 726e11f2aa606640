"""Every route path of the HTTP surface, in one place: routers declare them, the OpenAPI builder
documents each model on them, and the body-limit middleware picks its limit by them."""

# Probes and metrics.
HEALTH = "/healthz"
READY = "/readyz"
METRICS = "/metrics"

# The model catalogue.
MODELS = "/models"
MODEL = "/models/{model_name}"
MODEL_VERSION = "/models/{model_name}/versions/{version}"

# The friendly prediction surfaces.
PREDICT = "/models/{model_name}/predict"
VERSION_PREDICT = "/models/{model_name}/versions/{version}/predict"
PREDICT_FILE = "/models/{model_name}/predict/file"
PREDICT_FORM = "/models/{model_name}/predict/form"
PREDICT_STREAM = "/models/{model_name}/predict/stream"
VERSION_PREDICT_STREAM = "/models/{model_name}/versions/{version}/predict/stream"
FORM_PAGE = "/models/{model_name}/form"

# Explanations.
EXPLAIN = "/models/{model_name}/explain"
VERSION_EXPLAIN = "/models/{model_name}/versions/{version}/explain"

# The Open Inference Protocol.
V2 = "/v2"
V2_LIVE = "/v2/health/live"
V2_READY = "/v2/health/ready"
V2_MODEL = "/v2/models/{model_name}"
V2_MODEL_VERSION = "/v2/models/{model_name}/versions/{version}"
V2_MODEL_READY = "/v2/models/{model_name}/ready"
V2_MODEL_VERSION_READY = "/v2/models/{model_name}/versions/{version}/ready"
INFER = "/v2/models/{model_name}/infer"
VERSION_INFER = "/v2/models/{model_name}/versions/{version}/infer"
# Its model repository extension.
REPOSITORY_INDEX = "/v2/repository/index"
REPOSITORY_LOAD = "/v2/repository/models/{model_name}/load"
REPOSITORY_UNLOAD = "/v2/repository/models/{model_name}/unload"

# The API docs.
OPENAPI = "/openapi.json"
DOCS = "/docs"
DOCS_OAUTH2_REDIRECT = "/docs/oauth2-redirect"
REDOC = "/redoc"
DOCS_ASSETS = "/static/docs"

# Uploads (files, forms) get the upload byte limit; streams their own (the stream routes count
# their bodies themselves); every other body the body limit.
UPLOAD_SUFFIXES = (PREDICT_FILE.removeprefix(MODEL), PREDICT_FORM.removeprefix(MODEL))
STREAM_SUFFIX = PREDICT_STREAM.removeprefix(MODEL)
