"""Services that run on twin hosts, one module per server program (started inside a node's
namespace as ``python -m cyberrange.services.<module>``). Each declares the spec of the service
type(s) it implements (``spec.ServiceSpec``); ``registry`` finds them. Nothing here imports
the model or the twin: both import this package."""
