//! Stage 2 of ML-Agent: step-wise PPO from a pool of expert states (and the episode-wise
//! baseline), on the engine, the fused PPO kernels and the environment.

pub mod advantage;
pub mod pool;
pub mod rollout;
pub mod trainer;
pub mod value_loss;

pub use pool::StatesPool;
pub use rollout::Transition;
pub use trainer::{IterMetrics, Mode, RlConfig, RlRun};
