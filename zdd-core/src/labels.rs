//! The container labels zdd reads and writes.
//!
//! Containers are identified by id and labels, never by parsing names: a
//! name is for people, a label is a statement the engine keeps for us.

/// The service a container is a replica of (set by zdd on every container it
/// creates).
pub const SERVICE: &str = "zdd.service";
/// The release a container runs: the content hash tag of its image.
pub const RELEASE: &str = "zdd.release";
/// The container port the service listens on, when zdd was told it.
pub const PORT: &str = "zdd.port";
/// The deploy run that created the container (`zdd-scale --run`), so a
/// run killed before it wrote its records can still be rolled back by the
/// next one.
pub const RUN: &str = "zdd.run";
/// Set to `true` on one-off containers (migrations, admin commands): never a
/// replica, never routed.
pub const ONEOFF: &str = "zdd.oneoff";
/// On images built by `zdd-build`: the full sha256 of the build context.
pub const CONTEXT_HASH: &str = "zdd.context-hash";
/// On images built by `zdd-build --service S`: the service it was built
/// for, so `zdd-releases` can list and prune a service's releases. Never
/// `zdd.service`: a container run by hand from the image is no replica.
pub const BUILT_FOR: &str = "zdd.built-for";

/// Docker Compose (v1 and v2) labels, so a service started with
/// `docker-compose up` is adopted.
pub mod compose {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
}
