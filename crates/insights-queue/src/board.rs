//! placeholder
pub struct QueueBoard;
pub struct BoardCodec;
