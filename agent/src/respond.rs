//! The respond stage: findings in; the findings that stand under the
//! active policy, and the findings that say what was done about them, out
//! (to the ship stage). Inside: the governor (signed policy bundles) and
//! the enforcer it drives (kill, freeze, deny GPUs, block egress).

pub mod action_budget;
pub mod action_queue;
pub mod enforcer;
pub mod governor;
pub mod host_resolver;
mod respond_stage;
pub mod target_guard;
pub mod unfreeze_orders;

pub use enforcer::ActionPlan;
pub use respond_stage::{ControlRequest, RespondLinks, RespondStage};
