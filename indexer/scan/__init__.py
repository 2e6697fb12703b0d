"""The scanner's side of the data path: a folder tree diffed against the catalog.

- `walk`: every image file under a folder, each folder once (symlink loops, links into the library,
  exclusions, ignore markers), with its sidecar's version; pixdex's stale temp files removed on the way;
- `diff`: what is new, changed, unchanged, stale, failed, gone — or only its sidecar changed — against the
  catalog (`diff_tree`);
- `moves`: which gone rows arrived elsewhere (by inode, else by content).
"""
