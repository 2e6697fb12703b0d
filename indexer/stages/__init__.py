"""The pipeline's stages, one module each (`pipeline.Pipeline` lists them and runs each on a thread):

    feed → decode → batch → infer → sidecar → write

`flow` holds what they share (the queues' plumbing, waiting on workers, the flight of queue entries);
`work` what travels between them; `parking` the files that vanished on the way; `stats` the counters.
"""
