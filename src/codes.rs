//! The platform's 7xxx result codes: one table with the message, the HTTP status an API response
//! carries and whether a client may retry. Everything that reports an outcome (API bodies, status
//! events, logs) takes its code and text from here.

use serde::Serialize;

/// One entry of the code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// Numeric code as the platform reports it.
    pub code: u16,
    /// Human-readable message, as in the platform reference.
    pub message: &'static str,
    /// HTTP status an API response carrying this code uses.
    pub http_status: u16,
    /// Whether the same request may succeed if tried again later.
    pub retryable: bool,
}

macro_rules! codes {
    ($( $name:ident = $code:literal, $status:literal, $retry:literal, $msg:literal; )*) => {
        /// A 7xxx result code of the platform.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code { $( #[doc = $msg] $name, )* }

        /// Every code, in table order.
        pub const ALL: &[Code] = &[ $( Code::$name, )* ];

        impl Code {
            /// The table entry for this code.
            pub const fn info(self) -> CodeInfo {
                match self {
                    $( Code::$name => CodeInfo {
                        code: $code, message: $msg, http_status: $status, retryable: $retry,
                    }, )*
                }
            }
        }
    };
}

codes! {
    // Generic.
    Generic = 7000, 500, true, "A generic server error has occurred.";
    // Start streaming / start live recording.
    StreamStartTimedOut = 7001, 504, true, "The request to start streaming has timed-out. An internal server error has occurred.";
    StreamStartInProcess = 7002, 409, false, "The request to start streaming is in process.";
    StreamStartFailed = 7003, 500, true, "The request to start streaming has failed. An internal server error has occurred.";
    StreamRetryLater = 7004, 429, true, "Streaming cannot be started now. Try it again after 2 minutes.";
    StreamParamsMissingInternal = 7005, 500, false, "Input parameters for starting the stream are missing. An internal server error has occurred.";
    StreamUrlMissing = 7006, 400, false, "Input parameters, rtmpUrl and url, for starting the stream are missing. Specify these parameters.";
    StreamParamsMissing = 7007, 400, false, "Input parameters for starting the stream are missing. An internal server error has occurred.";
    StreamNotModerator = 7008, 403, false, "Only the moderator can start streaming.";
    StreamInvalidConfig = 7009, 400, false, "An invalid or undefined streaming configuration is specified.";
    RecordStartTimedOut = 7011, 504, true, "Request to start the live recording has timed-out. An internal server error has occurred.";
    RecordInProcess = 7012, 409, false, "Live recording request is in process.";
    RecordStartTimedOut2 = 7013, 504, true, "Request to start the live recording has timed-out. An internal server error has occurred.";
    RecordDelayed = 7014, 202, false, "Recording will be made available post-session with a delay.";
    RecordRetryLater = 7015, 429, true, "Live recording cannot be started now. Try it again after 2 minutes.";
    RecordParamsMissingInternal = 7016, 500, false, "Input paramters to start the recording are missing. An internal server error has occurred.";
    RecordParamsMissing = 7017, 400, false, "Input parameters to start live recording are missing. An internal server error has occurred.";
    RecordCannotStart = 7018, 500, true, "Cannot start live recording. An internal server error has occurred.";
    RecordAlreadyRunning = 7019, 409, false, "Live recording is already running.";
    StreamFailedToStart = 7020, 500, true, "Failed to start streaming. An internal server error has occurred.";
    // Call state.
    StateNotRequested = 7021, 409, false, "Streaming/recording is not requested. The state is not valid.";
    StateStreamFailed = 7022, 500, true, "The request to start streaming has failed. An internal server error has occurred.";
    StateRtmpUrlNotFound = 7023, 400, false, "The call state is changed. The RTMP URL is not found.";
    StateRecordFailed = 7024, 500, true, "The request to start the live recording has failed. An internal server error has occurred.";
    StateRecordingNameMissing = 7025, 500, false, "The call state is changed. The recording_name or recording_path is not obtained.";
    StateDisconnected = 7026, 410, false, "The call state is changed. The state is fetched as disconnected.";
    StateWrong = 7027, 409, false, "The call state is changed. The request contains a wrong state.";
    StateBrokerNotFound = 7028, 503, true, "The call state is changed. The allocated broker is not found.";
    StateConfNumMissing = 7029, 400, false, "The call state is changed. The confNum input parameter is missing.";
    // Stop live recording / stop streaming.
    RecordStopTimedOut = 7031, 504, true, "The request to stop the live recording has timed-out. An internal server error has occurred.";
    RecordStopTimedOut2 = 7032, 504, true, "The request to stop the live recording has timed-out. An internal server error has occurred.";
    RecordStopTimedOut3 = 7033, 504, true, "The request to stop the live recording has timed-out. An internal server error has occurred.";
    RecordStopInternal = 7034, 500, false, "Used internally";
    RecordStopLegacyFailed = 7035, 500, false, "Failed to stop the fall-back legacy recording.";
    RecordStopNotModerator = 7036, 403, false, "Only the moderator can stop live recording.";
    RecordStopDisconnecting = 7037, 409, false, "The room is disconnecting, the live recording of the room will be stopped.";
    RecordQueueCancelled = 7039, 200, false, "The live recording request was in the waiting queue. It is successfully removed from the queue.";
    StreamStopTimedOut = 7041, 504, true, "The request to stop streaming has timed-out. An internal server error has occurred.";
    StreamStopTimedOut2 = 7042, 504, true, "The request to stop streaming has timed-out. An internal server error has occurred.";
    StreamStopFailed = 7043, 500, true, "The request to stop streaming has failed. An internal server error has occurred.";
    StreamStopNotModerator = 7044, 403, false, "Only the moderator can stop streaming.";
    StreamStopDisconnecting = 7045, 409, false, "The room is disconnecting and streaming will be stopped.";
    StreamQueueCancelled = 7046, 200, false, "The streaming request was in the waiting queue. It is successfully removed from the queue.";
    // Move file.
    MoveFileFailed = 7051, 502, true, "Movement of the recording file has failed.";
    MoveFileFailed2 = 7052, 502, true, "Movement of the recording file has failed.";
    // Miscellaneous.
    RecordInternalRetry = 7061, 503, true, "An internal server error has occurred. Live Recording cannot be started. Try again after sometime.";
    RecordChangeNotModerator = 7071, 403, false, "Only moderator can change the live recording parameters.";
    StreamChangeNotModerator = 7072, 403, false, "Only moderator can change the streaming parameters.";
    UnsupportedLayout = 7073, 400, false, "The user has not provided the supported layout. An error has occurred while changing liveRecording.";
    NotRunning = 7074, 409, false, "The live recording/streaming is not running. The parameters cannot be changed.";
    LayoutMissing = 7075, 400, false, "The user has not provided the layout. An error has occurred while changing liveRecording.";
    MoveInProcess = 7076, 409, true, "Movement of the recording file is in process. The log files cannot be moved now.";
    MoveLogFailed = 7077, 500, true, "Movement of the log file has failed.";
    StreamChangeDisconnecting = 7078, 409, false, "The room is disconnecting, the streaming parameters cannot be changed.";
    RecordChangeDisconnecting = 7079, 409, false, "The room is disconnecting, the live recording parameters cannot be changed.";
    // Waiting queue.
    RecordQueueFailed = 7080, 503, true, "The live recording/streaming request in the waiting queue has failed to start.";
    StreamQueueFailed = 7081, 503, true, "The live recording/streaming request in the waiting queue has failed to start.";
    StreamQueued = 7104, 202, false, "The streaming request is in the waiting queue and will be started soon.";
    StreamQueuedLast = 7105, 202, false, "The last streaming request is in the waiting queue.";
    RecordQueued = 7207, 202, false, "The live recording request is in the waiting queue and will be started soon.";
    RecordQueuedLast = 7208, 202, false, "The last live recording request is in the waiting queue.";
    // Start streaming (extended) / live recording (extended).
    TooManyRtmpUrls = 7101, 400, false, "rtmpUrl should not exceed more than 3 values.";
    InvalidRtmpUrl = 7102, 400, false, "An invalid value or format of RTMP URL is specified.";
    StreamRoomDisconnecting = 7103, 409, false, "The room is disconnecting and cannot start streaming .";
    RecordNotModerator = 7201, 403, false, "Only a moderator can start live recording.";
    InvalidUrlFormat = 7202, 400, false, "Invalid format of the URL.";
    RecordRoomDisconnecting = 7203, 409, false, "The room is disconnecting, cannot start live recording.";
    RecordError = 7204, 500, true, "Live recording has encountered an error.";
    RecordLegacyRunning = 7205, 409, false, "Cannot start live recording, tried fall-back but legacy recording has already started.";
}

impl Code {
    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.info().code
    }

    /// The platform's message for this code.
    pub const fn message(self) -> &'static str {
        self.info().message
    }

    /// Looks a numeric code up in the table.
    pub fn from_u16(code: u16) -> Option<Code> {
        ALL.iter().copied().find(|c| c.as_u16() == code)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// The platform's response body: `{"result": code, "msg": "..."}` (0 for success).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResultBody {
    /// 0 on success, else the 7xxx code.
    pub result: u16,
    /// Human-readable message.
    pub msg: String,
}

impl ResultBody {
    /// A body for `code` carrying the table's message, with `detail` appended when given.
    pub fn from_code(code: Code, detail: Option<&str>) -> Self {
        let msg = match detail {
            Some(d) if !d.is_empty() => format!("{} ({d})", code.message()),
            _ => code.message().to_string(),
        };
        ResultBody {
            result: code.as_u16(),
            msg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every code the platform reference lists, exactly once.
    const REFERENCE: &[u16] = &[
        7000, 7001, 7002, 7003, 7004, 7005, 7006, 7007, 7008, 7009, 7011, 7012, 7013, 7014, 7015,
        7016, 7017, 7018, 7019, 7020, 7021, 7022, 7023, 7024, 7025, 7026, 7027, 7028, 7029, 7031,
        7032, 7033, 7034, 7035, 7036, 7037, 7039, 7041, 7042, 7043, 7044, 7045, 7046, 7051, 7052,
        7061, 7071, 7072, 7073, 7074, 7075, 7076, 7077, 7078, 7079, 7080, 7081, 7101, 7102, 7103,
        7104, 7105, 7201, 7202, 7203, 7204, 7205, 7207, 7208,
    ];

    #[test]
    fn table_holds_every_reference_code_once() {
        let mut seen = HashSet::new();
        for c in ALL {
            assert!(seen.insert(c.as_u16()), "duplicate code {}", c.as_u16());
        }
        let reference: HashSet<u16> = REFERENCE.iter().copied().collect();
        assert_eq!(seen, reference);
        assert_eq!(ALL.len(), REFERENCE.len());
    }

    #[test]
    fn lookup_and_body() {
        assert_eq!(Code::from_u16(7073), Some(Code::UnsupportedLayout));
        assert_eq!(Code::from_u16(7010), None);
        let b = ResultBody::from_code(Code::LayoutMissing, Some("field `layout`"));
        assert_eq!(b.result, 7075);
        assert!(b.msg.ends_with("(field `layout`)"));
        for c in ALL {
            let i = c.info();
            assert!((200..600).contains(&i.http_status));
            assert!(!i.message.is_empty());
        }
    }
}
