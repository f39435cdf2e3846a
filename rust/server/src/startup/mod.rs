//! Starting the server and the process around it: the run that binds the
//! socket and wires listeners, services and modules together, detaching
//! from the terminal, the readiness report to the spawning client, and the
//! rotating log file.

pub mod daemon;
pub mod logfile;
pub mod ready;
pub mod run;
