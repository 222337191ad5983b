//! doco-cd's view of Docker: reads from the Engine API and deploys through the `docker compose` CLI.
//!
//! Reads (which containers exist, their state and labels, whether an image is present) go through the
//! Engine API with bollard, because a poll must be cheap: one API call answers "what is deployed"
//! without spawning anything. Writes (render, up, down) go through the real `docker compose` CLI,
//! because compose's semantics (interpolation, merging, profiles, `include`, config hashes) are too
//! large to reimplement faithfully; we delegate and parse its JSON output instead.
//!
//! The labels doco-cd writes are upstream's (`cd.doco.*`), so stacks deployed by upstream doco-cd are
//! adopted by this one and vice versa. Labels reach containers through a compose override file
//! ([`write_label_override`]); note that compose hashes them into `com.docker.compose.config-hash`,
//! so a label value that changes recreates the container (see ARCHITECTURE.md, "Known traps").

mod compose;
mod endpoint;
mod engine;
pub mod labels;
mod own_container;
pub mod registry;
pub mod registry_auth;
mod render;
mod ssh_bridge;
mod view;

pub use compose::{
    BuildOptions, Compose, ComposeError, ComposeProject, MountOverride, PullPolicy, UpOptions,
    write_label_override, write_override,
};
pub use endpoint::{
    DEFAULT_CONTEXT, DEFAULT_HOST, Endpoint, EndpointError, SshTarget, docker_config_dir,
};
pub use engine::{
    ContainerEvent, ContainerInfo, ContainerState, DockerError, Engine, Health, JOB_EPHEMERAL,
    LocalImage, ProjectContainer,
};
pub use own_container::{container_id_from_mountinfo, own_container_id};
pub use registry::{ImageRef, Registry, RegistryError};
pub use render::{
    LiveInput, LiveKind, RECREATE_IGNORE_LABEL, RECREATE_IGNORE_SIGNAL_LABEL, RenderParseError,
    RenderedProject, RenderedService,
};
pub use view::ContainerView;
