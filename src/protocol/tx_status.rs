//! The transaction status a ReadyForQuery carries.

/// Where the server's session stands between queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InBlock,
    /// `E`: in a failed transaction block (queries refused until it ends).
    Failed,
}

impl TxStatus {
    /// The status from its wire byte; `None` for any other byte.
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InBlock),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }

    /// In a transaction block, failed or not.
    pub fn in_block(self) -> bool {
        self != TxStatus::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::TxStatus;

    #[test]
    fn round_trips_its_byte() {
        for s in [TxStatus::Idle, TxStatus::InBlock, TxStatus::Failed] {
            assert_eq!(TxStatus::from_byte(s.byte()), Some(s));
        }
        assert_eq!(TxStatus::from_byte(b'X'), None);
        assert!(!TxStatus::Idle.in_block());
        assert!(TxStatus::Failed.in_block());
    }
}
