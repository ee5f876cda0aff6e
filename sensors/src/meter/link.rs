//! One open connection to a meter (TCP or RTU) and the read request with timeout and error
//! classification.

use std::time::Duration;

use tokio_modbus::client::{Client, Context};
use tokio_modbus::{Request, Response, Slave};

use super::config::{parse_tcp_target, Parity, RegisterFunction, RtuSettings, Transport};
use super::error::{exception_name, PollError};
use super::sunspec::HoldingReader;

/// Human description of where the meter is, for reasons and logs.
pub fn describe(transport: &Transport) -> String {
    match transport {
        Transport::Tcp(addr) => match parse_tcp_target(addr) {
            Ok((host, port)) if host.contains(':') => format!("[{host}]:{port}"),
            Ok((host, port)) => format!("{host}:{port}"),
            Err(_) => addr.clone(),
        },
        Transport::Rtu(rtu) => format!("{} ({} baud)", rtu.path, rtu.baud),
    }
}

/// Open the transport and attach a Modbus client for `unit_id`.
pub async fn connect(
    transport: &Transport,
    unit_id: u8,
    timeout: Duration,
) -> Result<Context, PollError> {
    let target = describe(transport);
    match transport {
        Transport::Tcp(addr) => {
            let (host, port) = parse_tcp_target(addr).map_err(|reason| PollError::Connect {
                target: target.clone(),
                reason,
            })?;
            let stream =
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
                    .await
                {
                    Err(_) => {
                        return Err(PollError::Connect {
                            target,
                            reason: format!("timeout after {} ms", timeout.as_millis()),
                        })
                    }
                    Ok(Err(e)) => {
                        return Err(PollError::Connect {
                            target,
                            reason: io_reason(&e),
                        })
                    }
                    Ok(Ok(s)) => s,
                };
            let _ = stream.set_nodelay(true);
            Ok(tokio_modbus::client::tcp::attach_slave(
                stream,
                Slave(unit_id),
            ))
        }
        Transport::Rtu(rtu) => {
            let serial =
                open_serial(rtu).map_err(|reason| PollError::Connect { target, reason })?;
            Ok(tokio_modbus::client::rtu::attach_slave(
                serial,
                Slave(unit_id),
            ))
        }
    }
}

fn open_serial(rtu: &RtuSettings) -> Result<tokio_serial::SerialStream, String> {
    use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};
    let parity = match rtu.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = if rtu.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let data_bits = match rtu.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    tokio_serial::new(rtu.path.as_str(), rtu.baud)
        .parity(parity)
        .stop_bits(stop_bits)
        .data_bits(data_bits)
        .open_native_async()
        .map_err(|e| e.to_string())
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by the meter".into(),
        ConnectionAborted => "connection aborted".into(),
        BrokenPipe => "connection closed by the meter (broken pipe)".into(),
        TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// A connected client plus what is needed to describe failures.
pub struct Link<'a> {
    pub ctx: &'a mut Context,
    pub timeout: Duration,
    pub target: &'a str,
}

impl Link<'_> {
    /// Read `count` registers at `address` with the request timeout. Checks that the answer is
    /// the one asked for (function and length), so nothing downstream can index out of range.
    pub async fn read(
        &mut self,
        function: RegisterFunction,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, PollError> {
        let request = format!(
            "read {} registers {address:#06x} ({count})",
            function.name()
        );
        let req = match function {
            RegisterFunction::Input => Request::ReadInputRegisters(address, count),
            RegisterFunction::Holding => Request::ReadHoldingRegisters(address, count),
        };
        let answer = match tokio::time::timeout(self.timeout, self.ctx.call(req)).await {
            Err(_) => {
                return Err(PollError::Timeout {
                    timeout_ms: self.timeout.as_millis() as u64,
                    request,
                })
            }
            Ok(a) => a,
        };
        match answer {
            Err(tokio_modbus::Error::Transport(e)) => Err(classify_io(e, request, self.target)),
            Err(tokio_modbus::Error::Protocol(p)) => Err(PollError::Garbage {
                request,
                detail: protocol_detail(&p),
            }),
            Ok(Err(exc)) => {
                let code = u8::from(exc);
                Err(PollError::Exception {
                    code,
                    name: exception_name(code),
                    request,
                })
            }
            Ok(Ok(response)) => {
                let words = match (function, response) {
                    (RegisterFunction::Input, Response::ReadInputRegisters(w))
                    | (RegisterFunction::Holding, Response::ReadHoldingRegisters(w)) => w,
                    (_, other) => {
                        return Err(PollError::Garbage {
                            request,
                            detail: truncate(format!("unexpected answer {other:?}")),
                        })
                    }
                };
                if words.len() != usize::from(count) {
                    return Err(PollError::Garbage {
                        request,
                        detail: format!("asked for {count} registers, got {}", words.len()),
                    });
                }
                Ok(words)
            }
        }
    }
}

fn classify_io(e: std::io::Error, request: String, target: &str) -> PollError {
    use std::io::ErrorKind::*;
    match e.kind() {
        // The codec could not make a Modbus frame of the bytes received.
        InvalidData => PollError::Garbage {
            request,
            detail: format!("not a valid Modbus frame ({})", truncate(e.to_string())),
        },
        // Raised by the PDU decoder when the frame is shorter than its own byte count says.
        UnexpectedEof => PollError::Garbage {
            request,
            detail: format!("truncated Modbus frame ({})", truncate(e.to_string())),
        },
        // tokio-modbus reports a stream that ended without an answer with the last OS error,
        // often "success" (errno 0) or EAGAIN; neither can be a real error of async I/O.
        _ if e.raw_os_error() == Some(0) || e.kind() == WouldBlock => PollError::ConnectionLost {
            target: target.to_string(),
            reason: "connection closed by the meter".into(),
        },
        _ => PollError::ConnectionLost {
            target: target.to_string(),
            reason: io_reason(&e),
        },
    }
}

fn protocol_detail(p: &tokio_modbus::ProtocolError) -> String {
    use tokio_modbus::ProtocolError::*;
    match p {
        HeaderMismatch { message, .. } => {
            truncate(format!("answer to another request ({message})"))
        }
        FunctionCodeMismatch { request, result } => {
            let got = match result {
                Ok(r) => r.function_code().value(),
                Err(e) => e.function.value(),
            };
            format!(
                "answer has function code {got:#04x}, the request had {:#04x}",
                request.value()
            )
        }
    }
}

fn truncate(mut s: String) -> String {
    const MAX: usize = 200;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl HoldingReader for Link<'_> {
    async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>, PollError> {
        self.read(RegisterFunction::Holding, address, count).await
    }
}
