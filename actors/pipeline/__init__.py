"""The pipeline grain: one pipeline's task states, leases and ports.

From the inside out: ``book.TaskBook`` (pure state), ``core.PipelineCore`` (the book plus
its I/O), ``actor.PipelineActor`` (the mailbox that serialises calls into the core); code
outside the actor reaches it through ``services.scheduler.handle.GrainHandle``.
"""
