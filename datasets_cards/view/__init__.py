"""See a build: `fusionweave view OUT` (a local browser viewer, or a static site) and
`fusionweave trace OUT KEY` (one sample's whole history). Both read a build folder as it is,
through its manifests and the member offsets of its shards: nothing is unpacked, pages are lazy."""
