// Package image is the node agent's image store: it pulls images from OCI
// registries (go-containerregistry) or imports them from archives (OCI image
// layouts, as directories or tars, and `docker save` tars), caches them by
// content, and unpacks each to a read-only root filesystem that containers
// use as an overlayfs lower directory.
//
// # What it does
//
// Pull resolves a tag against its registry and downloads only what is
// missing; a digest already present needs no network. When a registry cannot
// be reached (or goes away mid-download) but the name is in the store, Pull
// returns the local image, silently: nodes must keep running for weeks
// without network. A definite answer from the registry (manifest unknown,
// unauthorized) is an error. Registries are reached
// over HTTPS only, loopback and private addresses included, unless listed in
// Options.Insecure. From a multi-platform index the linux/GOARCH image is
// taken. Concurrent pulls of one reference share one download (and its
// outcome: the first caller's context governs it); images that share layers
// share their blobs. Get and List never touch the network. GC
// removes everything not reachable from the roots the caller passes (the
// caller must pass the images its containers use).
//
// All content is verified: blobs against their digests when stored, the
// uncompressed layers against the diff IDs of the image config while they are
// unpacked.
//
// # On-disk layout
//
//	Dir/                      created 0700
//	  index.json              names -> manifest digests, image records
//	  blobs/sha256/HEX        manifests, configs, layers as fetched (compressed)
//	  rootfs/sha256/HEX/      unpacked root filesystem, HEX = manifest digest
//	  tmp/                    work in progress; emptied by Open
//
// Blobs and root filesystems are built under tmp/ and renamed into place
// once complete (a root filesystem after a syncfs), so whatever is under
// blobs/ and rootfs/ is complete. index.json is written to a temporary file,
// synced and renamed over the old one, and only after what it points to is in
// place; GC writes it before removing anything. Open forgets index entries
// whose root filesystem is missing. blobs/, rootfs/ and tmp/ are kept 0700:
// the root filesystems hold images' setuid-root binaries, which host users
// must not reach. One Store should own a Dir.
//
// # Unpacking hostile layers
//
// Layers are untrusted input. The rules, applied by the layer applier:
//
//   - Paths are cleaned as if absolute before use: "../../etc/passwd" and
//     "/etc/passwd" both become etc/passwd inside the root filesystem
//     (sanitised, like containerd), so ".." can never climb out of it.
//   - Symlinks are never followed out of the root filesystem. Every parent
//     directory is resolved by the kernel with openat2(RESOLVE_IN_ROOT |
//     RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): symlinks met on the way are
//     resolved as if the root filesystem were "/", the way they will be in the
//     container. So "etc -> /etc" then "etc/evil" cannot reach the host's
//     /etc: here it is a symlink loop (etc resolves to itself) and the image
//     is refused; a chain that ends at a directory of the image writes into
//     that directory. Where openat2 is unavailable, every component is opened
//     with O_NOFOLLOW and an entry under a symlinked parent is refused.
//   - The final component is never followed: entries are created with
//     mkdirat, symlinkat, linkat and openat(O_CREAT|O_EXCL|O_NOFOLLOW) after
//     removing what was there, so a file entry replaces a symlink or a
//     hardlink instead of writing through it; owners and times are set with
//     AT_SYMLINK_NOFOLLOW or on the open file.
//   - Symlink targets are stored as written; they may point anywhere and are
//     resolved inside the container at run time.
//   - Hardlink targets are cleaned like paths and resolved inside the root
//     filesystem ("/etc/passwd" links to the image's etc/passwd); a target
//     that does not exist there, or is a directory, refuses the image.
//   - Character and block devices and FIFOs are skipped and counted
//     (Image.Skipped): containers get their devices from the runtime.
//   - uid, gid and mode come from the tar headers, setuid and setgid bits
//     included (the runtime sets no_new_privs). Only the xattrs
//     security.capability and user.* (except user.overlay.*) are applied;
//     trusted.overlay.* and others, which could steer overlayfs, are dropped.
//   - MaxUnpackBytes bounds the uncompressed layer streams, all layers
//     together, which bounds the bytes written; a file that does not fit
//     refuses the image before it is written. An image may have at most
//     2^21 tar entries, so millions of empty files cannot exhaust inodes or
//     the agent's memory. Entry names in error messages are shortened.
//   - Whiteouts follow the OCI layer spec: ".wh.NAME" deletes NAME from lower
//     layers, ".wh..wh..opq" empties its directory of what lower layers put
//     there; neither is ever materialised. A whiteout of "." or ".." refuses
//     the image.
//   - Any other malformed entry (a regular file where a directory is needed,
//     an unreadable tar) refuses the image. A refused image leaves no root
//     filesystem and no index entry; its blobs stay until GC.
//
// The root filesystem keeps the image's own modes; it is an overlayfs lower
// directory, never written after unpacking.
//
// The applier is fuzzed (FuzzUnpack, seeded with the hostile cases of the
// tests): it must never panic nor touch anything outside the root. Run it
// with
//
//	go test -run '^$' -fuzz FuzzUnpack -fuzztime 60s -fuzzminimizetime 100x ./agent/image/
//
// (without -fuzzminimizetime, minimizing each new input can take the whole
// run).
//
// # What it is not for
//
// It is not a registry client library, a builder or a pusher, and it does
// not share layers between root filesystems (each image is unpacked whole;
// blobs are shared). It has no notion of which images are in use: that is
// the agent's, which passes them to GC. It needs Linux and root (as another
// user, owners are not applied).
package image
