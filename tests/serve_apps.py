"""Apps deployed next to the integration tier's session app (``serve_app``), on its cluster."""

from __future__ import annotations


def deploy_beside(serve_app, cfg, name: str, prefix: str, runner_options: dict | None = None):
    """Deploy the app of ``cfg`` (an :class:`~deployments.config.AppConfig`) as application
    ``name`` at route ``prefix`` on the session's cluster, next to the test app; a generator
    for a module-scoped fixture: yields the app's URL once Serve reports it running, deletes
    the app after. ``runner_options``: PlanExecutor ``.options(...)``."""
    import ray
    from ray import serve

    from deployments.app import build_graph

    def connect():  # another module's fixture may have shut its driver down meanwhile
        ray.init(
            address=serve_app.ray_address,
            namespace="serve",
            ignore_reinit_error=True,
            log_to_driver=False,
        )

    connect()
    try:
        serve.run(build_graph(cfg, runner_options=runner_options), name=name, route_prefix=prefix)
        yield serve_app.url + prefix
    finally:
        connect()
        serve.delete(name)
        ray.shutdown()
