//! Everything the service sends to chat clients, declared once: the client method names the
//! web UI and the Node tests listen for, and the shape of each argument. Hub methods send
//! through [`TypedClients<ChatClient>`](signalr_core::TypedClients), REST handlers and the
//! assistant through a [`ChatHub`]; a wrong argument is a compile error.

use std::convert::Infallible;

use serde::Serialize;
use signalr_core::{
    client_methods, Context, FromContext, Groups, HubContext, Presence, TypedHubContext,
};

use crate::store::{ChatMessage, ReadState, Room};

client_methods! {
    /// The client methods of the chat (`connection.on(name, …)` in `static/app.js`).
    pub enum ChatClient {
        /// A stored message, to its room.
        ReceiveMessage { message: ChatMessage },
        /// A piece of the assistant's reply as it streams, to the room.
        ReceiveMessageChunk { chunk: ReplyChunk },
        /// The assistant will not answer, or its reply failed; nothing was stored.
        AssistantError { notice: AssistantNotice },
        /// Someone is typing, to the room's other connections.
        UserTyping { member: RoomMember },
        /// Someone became a member, to the room.
        UserJoined { member: RoomMember },
        /// Someone stopped being a member, to the room.
        UserLeft { member: RoomMember },
        /// The room's ownership passed on, to the room.
        RoomOwnerChanged { owner: NewOwner },
        /// The owner added this user to a room.
        RoomAdded { room: Room },
        /// The owner removed this user from a room.
        RoomRemoved { room: RoomRef },
        /// A new public room, to everyone.
        RoomCreated { room: Room },
        /// An edited message, to its room.
        MessageEdited { message: ChatMessage },
        /// A deleted message, to its room.
        MessageDeleted { deleted: DeletedMessage },
        /// A direct conversation began, to each of its two people (`member` is the other one).
        DirectConversationStarted { member: RoomMember },
        /// The user's read marker moved, to all of their connections.
        UnreadChanged { read: ReadState },
    }
}

/// A user in a room: `{roomId, userId, userName}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMember {
    pub room_id: i64,
    pub user_id: i64,
    pub user_name: String,
}

impl RoomMember {
    pub fn new(room_id: i64, user_id: i64, user_name: &str) -> Self {
        RoomMember {
            room_id,
            user_id,
            user_name: user_name.to_owned(),
        }
    }
}

/// `{roomId, userId}`: the room's new owner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOwner {
    pub room_id: i64,
    pub user_id: i64,
}

/// `{roomId}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRef {
    pub room_id: i64,
}

/// `{roomId, messageId}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedMessage {
    pub room_id: i64,
    pub message_id: i64,
}

/// `{messageId, roomId, delta}`: `messageId` names the reply being streamed (not yet stored).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyChunk {
    pub message_id: String,
    pub room_id: i64,
    pub delta: String,
}

/// `{roomId, messageId, error}`; `messageId` is `null` when no reply had started.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantNotice {
    pub room_id: i64,
    pub message_id: Option<String>,
    pub error: String,
}

/// The chat hub from anywhere (REST handlers, the assistant's tasks, hub methods): typed
/// sends, plus groups and presence. Derefs to the typed context, so `hub.group(…)` is a
/// [`TypedClientProxy<ChatClient>`](signalr_core::TypedClientProxy).
#[derive(Clone)]
pub struct ChatHub(TypedHubContext<ChatClient>);

impl ChatHub {
    pub fn new(context: &HubContext) -> Self {
        ChatHub(context.typed())
    }

    pub fn groups(&self) -> Groups {
        self.0.untyped().groups()
    }

    pub fn presence(&self) -> Presence {
        self.0.untyped().presence()
    }

    /// `None` without a backplane; otherwise whether it is connected.
    pub fn backplane_healthy(&self) -> Option<bool> {
        self.0.untyped().backplane_healthy()
    }

    /// Open connections on this process.
    pub fn connection_count(&self) -> usize {
        self.0.untyped().connection_count()
    }
}

impl std::ops::Deref for ChatHub {
    type Target = TypedHubContext<ChatClient>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A hub method parameter, like [`HubContext`].
impl FromContext for ChatHub {
    type Rejection = Infallible;
    fn from_context(context: &Context) -> Result<Self, Infallible> {
        Ok(ChatHub::new(&context.hub()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use signalr_core::test_util::TestClient;
    use signalr_core::Hub;

    use super::*;

    /// The web UI and the Node suites listen for these names with these arguments: every
    /// client method, as it reaches a client.
    #[tokio::test]
    async fn every_client_method_keeps_its_name_and_argument_shape() {
        let message = ChatMessage {
            id: 5,
            room_id: 1,
            user_id: 2,
            user_name: "ada".into(),
            content: "hi".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            edited_at: None,
        };
        let message_json = json!({"id": 5, "roomId": 1, "userId": 2, "userName": "ada",
            "content": "hi", "createdAt": "2024-01-01T00:00:00Z", "editedAt": null});
        let room = Room {
            id: 1,
            name: "general".into(),
            is_private: false,
            created_by: 2,
        };
        let room_json = json!({"id": 1, "name": "general", "isPrivate": false, "createdBy": 2});
        let member = RoomMember {
            room_id: 1,
            user_id: 2,
            user_name: "ada".into(),
        };
        let member_json = json!({"roomId": 1, "userId": 2, "userName": "ada"});
        let cases = [
            (
                ChatClient::ReceiveMessage {
                    message: message.clone(),
                },
                "ReceiveMessage",
                message_json.clone(),
            ),
            (
                ChatClient::ReceiveMessageChunk {
                    chunk: ReplyChunk {
                        message_id: "reply-1".into(),
                        room_id: 1,
                        delta: "Hel".into(),
                    },
                },
                "ReceiveMessageChunk",
                json!({"messageId": "reply-1", "roomId": 1, "delta": "Hel"}),
            ),
            (
                ChatClient::AssistantError {
                    notice: AssistantNotice {
                        room_id: 1,
                        message_id: None,
                        error: "off".into(),
                    },
                },
                "AssistantError",
                json!({"roomId": 1, "messageId": null, "error": "off"}),
            ),
            (
                ChatClient::UserTyping {
                    member: member.clone(),
                },
                "UserTyping",
                member_json.clone(),
            ),
            (
                ChatClient::UserJoined {
                    member: member.clone(),
                },
                "UserJoined",
                member_json.clone(),
            ),
            (
                ChatClient::UserLeft {
                    member: member.clone(),
                },
                "UserLeft",
                member_json.clone(),
            ),
            (
                ChatClient::RoomOwnerChanged {
                    owner: NewOwner {
                        room_id: 1,
                        user_id: 3,
                    },
                },
                "RoomOwnerChanged",
                json!({"roomId": 1, "userId": 3}),
            ),
            (
                ChatClient::RoomAdded { room: room.clone() },
                "RoomAdded",
                room_json.clone(),
            ),
            (
                ChatClient::RoomRemoved {
                    room: RoomRef { room_id: 1 },
                },
                "RoomRemoved",
                json!({"roomId": 1}),
            ),
            (ChatClient::RoomCreated { room }, "RoomCreated", room_json),
            (
                ChatClient::MessageEdited { message },
                "MessageEdited",
                message_json,
            ),
            (
                ChatClient::MessageDeleted {
                    deleted: DeletedMessage {
                        room_id: 1,
                        message_id: 5,
                    },
                },
                "MessageDeleted",
                json!({"roomId": 1, "messageId": 5}),
            ),
            (
                ChatClient::DirectConversationStarted { member },
                "DirectConversationStarted",
                member_json,
            ),
            (
                ChatClient::UnreadChanged {
                    read: ReadState {
                        room_id: 1,
                        last_read_message_id: 5,
                        unread: 0,
                    },
                },
                "UnreadChanged",
                json!({"roomId": 1, "lastReadMessageId": 5, "unread": 0}),
            ),
        ];
        let hub = Hub::builder().build();
        let chat = ChatHub::new(&hub.context());
        let mut client = TestClient::connect(&hub).await.unwrap();
        for (message, name, argument) in cases {
            chat.all().send(message).await.unwrap();
            let (target, arguments) = client.recv_invocation().await.unwrap();
            assert_eq!(target, name);
            let arguments: Value = serde_json::to_value(&arguments).unwrap();
            assert_eq!(arguments, json!([argument]), "{name}");
        }
    }
}
