"""XMP sidecars: what pixdex learns, where other programs read it; what a person wrote, kept and respected.

The one home of the sidecar rules (docs/SIDECARS.md says what is written where, and why); the pipeline and
the scanner call it, nothing else knows them:

- `naming`: which file is an image's sidecar (``IMG.jpg.xmp``, ``IMG.xmp``, any case; RAW pairs);
- `state`: what the index knows of a sidecar (`SidecarState`) and the version that tells a change;
- `keys`: the properties, as pyexiv2 keys and RDF predicates;
- `keywords`: which keywords a sidecar holds and where each goes (all three fields programs read);
- `read`: reading a sidecar; `embedding`: the CLIP vector a sidecar carries; `carried`: what a decode worker
  takes from a sidecar instead of running the models;
- `seed`: a new sidecar's first packet (the image's own metadata, what a RAW took over);
- `merge`: merging pixdex's keywords, description, text, embedding and id, and a person's edit;
- `writers`: exiv2 or the RDF/XML editor (`rdf`), each result checked as an RDF graph (`graph`);
- `moves`: a sidecar that follows its image (moves, deletions);
- `embedded`: opt-in keywords into a JPEG's or TIFF's own XMP;
- `tasks`: the jobs the decode pool runs (merge, carry, drop, edit, describe's write);
- `keeper`: the indexing process's side — the sidecar versions pixdex wrote itself, the lock that orders
  writes and moves, the jobs it hands the decode pool.

pyexiv2 runs only in worker processes, one call at a time (`exiv2`).
"""
