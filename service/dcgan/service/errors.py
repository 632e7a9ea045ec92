"""Domain errors of the service. The transport maps them to gRPC status codes in one place
(`dcgan.service.interceptors`); nothing below the servicer knows about gRPC."""


class ServiceError(Exception):
    """Base of the errors a caller caused or can act on; the message is safe to show them."""


class InvalidInput(ServiceError, ValueError):
    """A request that can never succeed as sent (wrong length, NaN, bad count, bad encoding)."""


class QueueFull(ServiceError):
    """The batching queue holds as many latents as it may: try again later."""


class ResponseTooLarge(ServiceError):
    """The images asked for would not fit in one response message: ask for fewer, or stream."""


class NotFound(ServiceError):
    """A model or version the server does not hold."""


class Unavailable(ServiceError):
    """The server is loading its model or draining: try another replica or later."""


class ManagementOff(ServiceError):
    """LoadModel or UnloadModel on a server whose --model-control is not explicit."""


class LoadFailed(ServiceError):
    """The versions a LoadModel asked for could not be loaded; what served before still does."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before its latents were computed: they were not."""


class ModelFailure(ServiceError):
    """The model run failed; every request of that batch gets this error."""


class Unauthenticated(ServiceError):
    """A call without the bearer token the server was started with."""
