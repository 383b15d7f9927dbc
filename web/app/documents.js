// Generated from web/graphql/*.graphql by `make documents` (python -m schema.manifest --web): do not edit.
// Each operation with the fragments it uses, as the client sends it; `hash` is the
// SHA-256 of `text`, and web/trusted-documents.json holds the same documents.
export const documents = {
  "LogIn": {
    "text": "mutation LogIn($username: String!, $password: String!) {\n  logIn(username: $username, password: $password) {\n    token\n    user {\n      ...UserSummary\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "f1c0acca5042616c16cfe779682df8dba6104fcfd81ef608648818c04b6e6d50"
  },
  "SignUp": {
    "text": "mutation SignUp($username: String!, $email: String!, $password: String!) {\n  signUp(username: $username, email: $email, password: $password) {\n    token\n    user {\n      ...UserSummary\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "e2e9cc1cbaa1efccfa81acbe407a067217807486a03563c8733b5bbbc819d88c"
  },
  "Viewer": {
    "text": "query Viewer {\n  viewer {\n    ...UserSummary\n  }\n  notifications(first: 1) {\n    unreadCount\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "76bb5c895078ffca51a35492db95fbecdc396274fbdc6f9ccac2ec58bf1dc452"
  },
  "HomeFeed": {
    "text": "query HomeFeed($first: Int!, $after: String) {\n  feed(first: $first, after: $after) {\n    edges {\n      cursor\n      node {\n        ...PostFields\n      }\n    }\n    pageInfo {\n      hasNextPage\n      endCursor\n    }\n  }\n}\n\nfragment PostFields on Post {\n  id\n  caption\n  hashtags\n  createdAt\n  status\n  failureReason\n  author {\n    ...UserSummary\n  }\n  media {\n    ...MediaFields\n  }\n  likeCount\n  commentCount\n  viewerHasLiked\n  comments(first: 2) {\n    edges {\n      node {\n        ...CommentFields\n      }\n    }\n    pageInfo {\n      hasNextPage\n      endCursor\n    }\n  }\n}\n\nfragment CommentFields on Comment {\n  id\n  text\n  createdAt\n  author {\n    ...UserSummary\n  }\n}\n\nfragment MediaFields on Media {\n  id\n  kind\n  width\n  height\n  placeholder\n  durationSeconds\n  videoUrl\n  thumbJpeg: url(size: THUMB, format: JPEG)\n  thumbWebp: url(size: THUMB, format: WEBP)\n  feedJpeg: url(size: FEED, format: JPEG)\n  feedWebp: url(size: FEED, format: WEBP)\n  fullJpeg: url(size: FULL, format: JPEG)\n  fullWebp: url(size: FULL, format: WEBP)\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "34e76b8a13ad7d3e8d6eaa4bda55c1f78692f38e8d444e154830f28f9f788ef2"
  },
  "PostDetail": {
    "text": "query PostDetail($id: ID!) {\n  post(id: $id) {\n    ...PostFields\n  }\n}\n\nfragment PostFields on Post {\n  id\n  caption\n  hashtags\n  createdAt\n  status\n  failureReason\n  author {\n    ...UserSummary\n  }\n  media {\n    ...MediaFields\n  }\n  likeCount\n  commentCount\n  viewerHasLiked\n  comments(first: 2) {\n    edges {\n      node {\n        ...CommentFields\n      }\n    }\n    pageInfo {\n      hasNextPage\n      endCursor\n    }\n  }\n}\n\nfragment CommentFields on Comment {\n  id\n  text\n  createdAt\n  author {\n    ...UserSummary\n  }\n}\n\nfragment MediaFields on Media {\n  id\n  kind\n  width\n  height\n  placeholder\n  durationSeconds\n  videoUrl\n  thumbJpeg: url(size: THUMB, format: JPEG)\n  thumbWebp: url(size: THUMB, format: WEBP)\n  feedJpeg: url(size: FEED, format: JPEG)\n  feedWebp: url(size: FEED, format: WEBP)\n  fullJpeg: url(size: FULL, format: JPEG)\n  fullWebp: url(size: FULL, format: WEBP)\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "49218697abc956f735b53cd4bfbd1cb922595fb3c6c94f2d63dee2d741054857"
  },
  "FeedItemAdded": {
    "text": "subscription FeedItemAdded {\n  feedItemAdded {\n    ...PostFields\n  }\n}\n\nfragment PostFields on Post {\n  id\n  caption\n  hashtags\n  createdAt\n  status\n  failureReason\n  author {\n    ...UserSummary\n  }\n  media {\n    ...MediaFields\n  }\n  likeCount\n  commentCount\n  viewerHasLiked\n  comments(first: 2) {\n    edges {\n      node {\n        ...CommentFields\n      }\n    }\n    pageInfo {\n      hasNextPage\n      endCursor\n    }\n  }\n}\n\nfragment CommentFields on Comment {\n  id\n  text\n  createdAt\n  author {\n    ...UserSummary\n  }\n}\n\nfragment MediaFields on Media {\n  id\n  kind\n  width\n  height\n  placeholder\n  durationSeconds\n  videoUrl\n  thumbJpeg: url(size: THUMB, format: JPEG)\n  thumbWebp: url(size: THUMB, format: WEBP)\n  feedJpeg: url(size: FEED, format: JPEG)\n  feedWebp: url(size: FEED, format: WEBP)\n  fullJpeg: url(size: FULL, format: JPEG)\n  fullWebp: url(size: FULL, format: WEBP)\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "293dea2851a5057d84a4c28bf91dd1463065ce135d721cf5e13247c5db921224"
  },
  "Notifications": {
    "text": "query Notifications($first: Int!, $after: String) {\n  notifications(first: $first, after: $after) {\n    unreadCount\n    edges {\n      node {\n        ...NotificationFields\n      }\n    }\n    pageInfo {\n      hasNextPage\n      endCursor\n    }\n  }\n}\n\nfragment NotificationFields on Notification {\n  id\n  kind\n  createdAt\n  read\n  actor {\n    ...UserSummary\n  }\n  post {\n    id\n    media {\n      id\n      placeholder\n      thumbJpeg: url(size: THUMB, format: JPEG)\n    }\n  }\n  comment {\n    id\n    text\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "1664bc259fc194c9ce936cfbb0ac904c0ad5e8d083c17924a45b48d7d59235c0"
  },
  "MarkNotificationsRead": {
    "text": "mutation MarkNotificationsRead {\n  markNotificationsRead {\n    unreadCount\n  }\n}",
    "hash": "73b690fb593c40fbda994d30b01bca7f6eb90bc66140951a11a2216dad4a656c"
  },
  "NotificationAdded": {
    "text": "subscription NotificationAdded {\n  notificationAdded {\n    ...NotificationFields\n  }\n}\n\nfragment NotificationFields on Notification {\n  id\n  kind\n  createdAt\n  read\n  actor {\n    ...UserSummary\n  }\n  post {\n    id\n    media {\n      id\n      placeholder\n      thumbJpeg: url(size: THUMB, format: JPEG)\n    }\n  }\n  comment {\n    id\n    text\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "8023f7d5a69621e8ad1d1cc713b3f5ac0cea03162b73fcd1aee7ea94b601f95d"
  },
  "CreatePost": {
    "text": "mutation CreatePost($input: CreatePostInput!) {\n  createPost(input: $input) {\n    post {\n      id\n      status\n    }\n    uploads {\n      ...UploadTargetFields\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UploadTargetFields on UploadTarget {\n  mediaId\n  method\n  url\n  headers {\n    name\n    value\n  }\n  fields {\n    name\n    value\n  }\n  expiresAt\n  partSize\n  partUrls\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "ab69d8a72f6964bc915e51f53a9c10f1773dccbebe7a46b2e20e5620d6b50020"
  },
  "CompleteUpload": {
    "text": "mutation CompleteUpload($postId: ID!) {\n  completeUpload(postId: $postId) {\n    post {\n      id\n      status\n      failureReason\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "9a5fc268e44528bde48b448d794a799fc116166c9aed23fd1c084dba95816bd3"
  },
  "PostStatus": {
    "text": "query PostStatus($id: ID!) {\n  post(id: $id) {\n    id\n    status\n    failureReason\n  }\n}",
    "hash": "8d03f2730f27b9379c93db0320825c76160ee82b5fbaed8f6540e92aca8d0fe3"
  },
  "UserProfile": {
    "text": "query UserProfile($username: String!, $first: Int!, $after: String) {\n  user(username: $username) {\n    ...UserSummary\n    bio\n    isPrivate\n    followerCount\n    followingCount\n    postCount\n    viewerIsFollowing\n    viewerHasRequestedFollow\n    followsViewer\n    posts(first: $first, after: $after) {\n      edges {\n        node {\n          ...PostThumb\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n}\n\nfragment PostThumb on Post {\n  id\n  status\n  caption\n  author {\n    id\n    username\n  }\n  likeCount\n  commentCount\n  media {\n    id\n    kind\n    placeholder\n    thumbJpeg: url(size: THUMB, format: JPEG)\n    thumbWebp: url(size: THUMB, format: WEBP)\n    feedJpeg: url(size: FEED, format: JPEG)\n    feedWebp: url(size: FEED, format: WEBP)\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "54f7a18b57906220b36407c0a901613271edb361a5e3516c95fe964aeabc9494"
  },
  "Follow": {
    "text": "mutation Follow($userId: ID!) {\n  follow(userId: $userId) {\n    user {\n      id\n      isPrivate\n      followerCount\n      viewerIsFollowing\n      viewerHasRequestedFollow\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "ee5d9b599fb1e98ba26720c2b4b8af3732861b644b6efa120bd680c8b5166699"
  },
  "Unfollow": {
    "text": "mutation Unfollow($userId: ID!) {\n  unfollow(userId: $userId) {\n    user {\n      id\n      isPrivate\n      followerCount\n      viewerIsFollowing\n      viewerHasRequestedFollow\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "ba07ca7608388ff0120c3a6fc13309052bd3b1b5c7041c7b4f23fad0c8c9375c"
  },
  "SearchUsers": {
    "text": "query SearchUsers($query: String!, $first: Int!) {\n  searchUsers(query: $query, first: $first) {\n    ...UserSummary\n    followerCount\n    isPrivate\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "e5a2da21c50ec0e03aa1fbec20877a7ea71248522e7cf56122e410a656848ef1"
  },
  "Hashtag": {
    "text": "query Hashtag($name: String!, $first: Int!, $after: String) {\n  hashtag(name: $name) {\n    name\n    postCount\n    posts(first: $first, after: $after) {\n      edges {\n        node {\n          ...PostThumb\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n}\n\nfragment PostThumb on Post {\n  id\n  status\n  caption\n  author {\n    id\n    username\n  }\n  likeCount\n  commentCount\n  media {\n    id\n    kind\n    placeholder\n    thumbJpeg: url(size: THUMB, format: JPEG)\n    thumbWebp: url(size: THUMB, format: WEBP)\n    feedJpeg: url(size: FEED, format: JPEG)\n    feedWebp: url(size: FEED, format: WEBP)\n  }\n}",
    "hash": "9185a0d4cefe083e03c38c7ad3f90a2ca64fe633dd54bea7f0c2dd4ea8b33342"
  },
  "LikePost": {
    "text": "mutation LikePost($postId: ID!) {\n  likePost(postId: $postId) {\n    post {\n      id\n      likeCount\n      viewerHasLiked\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "25b8fcccfe2b458088a4ff2e5e5997a7f3afd301ea76f640fa30554e1fc865da"
  },
  "UnlikePost": {
    "text": "mutation UnlikePost($postId: ID!) {\n  unlikePost(postId: $postId) {\n    post {\n      id\n      likeCount\n      viewerHasLiked\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "1ad0d3610711c61babdf1d595e40d780fd51e7cac958005e84b335020a3e605c"
  },
  "AddComment": {
    "text": "mutation AddComment($postId: ID!, $text: String!) {\n  addComment(postId: $postId, text: $text) {\n    comment {\n      ...CommentFields\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment CommentFields on Comment {\n  id\n  text\n  createdAt\n  author {\n    ...UserSummary\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "34afb0deadee10736ef1758af16414068462da54993cb44da38f68f2a74673cb"
  },
  "PostComments": {
    "text": "query PostComments($id: ID!, $first: Int!, $after: String) {\n  post(id: $id) {\n    id\n    commentCount\n    comments(first: $first, after: $after) {\n      edges {\n        node {\n          ...CommentFields\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n}\n\nfragment CommentFields on Comment {\n  id\n  text\n  createdAt\n  author {\n    ...UserSummary\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "bd325f953c9da6fea6c53179658aba30053b044f653b3d65d397b86872779db5"
  },
  "StoriesTray": {
    "text": "query StoriesTray {\n  storiesTray {\n    author {\n      ...UserSummary\n    }\n    hasUnseen\n    stories {\n      ...StoryFields\n    }\n  }\n}\n\nfragment StoryFields on Story {\n  id\n  createdAt\n  expiresAt\n  viewerHasSeen\n  status\n  media {\n    id\n    kind\n    placeholder\n    videoUrl\n    fullJpeg: url(size: FULL, format: JPEG)\n    fullWebp: url(size: FULL, format: WEBP)\n  }\n}\n\nfragment UserSummary on User {\n  id\n  username\n  displayName\n}",
    "hash": "ee2870128d2dd5f0d1c8008ec9f07f132bd4f377b1d9a6e0cdc9a3366aa9fac4"
  },
  "MarkStorySeen": {
    "text": "mutation MarkStorySeen($storyId: ID!) {\n  markStorySeen(storyId: $storyId) {\n    story {\n      id\n      viewerHasSeen\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "0f2f9906ebfc15368b1aef9337a2ff1ac6e4bf544a8e37f134beca8a7252efd6"
  },
  "CreateStory": {
    "text": "mutation CreateStory($media: MediaInput!) {\n  createStory(media: $media) {\n    story {\n      id\n      status\n    }\n    uploads {\n      ...UploadTargetFields\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UploadTargetFields on UploadTarget {\n  mediaId\n  method\n  url\n  headers {\n    name\n    value\n  }\n  fields {\n    name\n    value\n  }\n  expiresAt\n  partSize\n  partUrls\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "ed69f6c1df06181d313baec9164e4494009e192358b6942f6a19d646f5deb7a5"
  },
  "CompleteStoryUpload": {
    "text": "mutation CompleteStoryUpload($storyId: ID!) {\n  completeStoryUpload(storyId: $storyId) {\n    story {\n      id\n      status\n      failureReason\n    }\n    errors {\n      ...UserErrorFields\n    }\n  }\n}\n\nfragment UserErrorFields on UserError {\n  field\n  message\n  code\n}",
    "hash": "2e1a763c15e779daa2c6287f2e833504a2469f272762425396d51935bedc4292"
  }
};
